"""The processors' per-record guard and partition clocks, on a worker app built as for real.

The app is built for the process role (no ClickHouse) against a broker that is not there: the
processors are driven record by record; dead letters queue in the producer and are counted.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Message

from portal_pulse.settings import Settings
from schemas.serializer import clean_event_to_record
from streams.app import build_app
from streams.processor_agent import Processors
from streams.watermark import COVER_HEADER, HEADER, SOURCE_HEADER, header_value

NOBODY = "127.0.0.1:9"  # discard port: nothing answers, nothing is delivered


@pytest.fixture
def processors(tmp_path: Path) -> Iterator[Processors]:
    practices = tmp_path / "practices.yaml"
    every_day = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    practices.write_text(
        yaml.safe_dump(
            {
                "practices": {
                    "default": {
                        "timezone": "UTC",
                        "hours": every_day,
                        "holidays": [],
                        "sla": {
                            "internal_target": "100 business minutes",
                            "external_promise": "540 business minutes",
                            "at_risk_fraction": 0.5,
                        },
                    }
                }
            }
        )
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        web_port=-1,
        pseudonym_key="k" * 40,
        topic_prefix="guard",
        practices_file=practices,
    )
    _app, rt = build_app(settings, NOBODY, role="process")
    assert rt.processors is not None
    yield rt.processors
    rt.close()


def _clean(pr: Processors, **fields: Any) -> bytes:
    raw = {
        "event_id": "e1",
        "event_type": "portal.login",
        "occurred_at": "2026-01-05T09:00:00+00:00",
        "practice_id": "P001",
        "patient_id": "pt-1",
        "channel": "web",
        **fields,
    }
    event = pr.rt.ingestor.ingest(json.dumps(raw).encode(), partition=0)
    assert event is not None and not hasattr(event, "reason"), event
    return pr.rt.clean_codec.encode_record(clean_event_to_record(event))


def _record(pr: Processors, offset: int, value: bytes | None, headers: list[Any]) -> Message:
    topic = pr.settings.topics.clean
    return Message(topic=topic, partition=0, offset=offset, key=b"k", value=value, headers=headers)


def _headers(pr: Processors, at: datetime | None, raw_offset: int | None) -> list[Any]:
    raw = sorted(pr.settings.topics.raw.values())[0]
    headers: list[Any] = []
    if at is not None:
        mask = (1 << pr.raw_count) - 1
        headers += [(HEADER, header_value(at)), (COVER_HEADER, f"{mask:x};1".encode())]
    if raw_offset is not None:
        headers.append((SOURCE_HEADER, f"{raw}|0|{raw_offset}".encode()))
    return headers


T = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([(SOURCE_HEADER, b"guard.raw.portal|0|notanumber")], "good", "bad_header"),
        ([(SOURCE_HEADER, b"elsewhere|0|1")], "good", "bad_header"),
        ([(HEADER, b"notanumber")], "good", "bad_header"),
        ([(HEADER, b"99999999999999999")], b"", "bad_header"),
        ([(HEADER, b"1767603600000"), (COVER_HEADER, b"zz;9")], b"", "bad_header"),
        ([(COVER_HEADER, b"f;1")], "good", "bad_header"),
        ([(HEADER, b"\xff\xfe")], "good", "bad_header"),
        ([], b"", "bad_internal_record"),
        ([], None, "bad_internal_record"),
        ([], b"\x00\x01garbage", "bad_internal_record"),
        ([], b"{}", "bad_internal_record"),
    ],
)
def test_a_record_that_does_not_parse_is_dead_lettered_and_the_stream_goes_on(
    processors: Processors, headers: list[Any], value: Any, reason: str
) -> None:
    pr = processors
    sent = pr.delivery.sent
    body = _clean(pr, event_id="poison") if value == "good" else value
    assert pr.process(_record(pr, 0, body, headers)) is None
    assert pr.dead_letter_reasons == {reason: 1}
    assert pr.delivery.sent == sent + 1, "one dead letter on its way"
    # The next records are processed as usual: a message opens a clock whose deadlines fire.
    sent_at = T
    good = _clean(
        pr, event_id="m1", event_type="message.sent", occurred_at=sent_at.isoformat(),
        thread_id="th-1", message_id="msg-1", category="clinical",
    )  # fmt: skip
    pr.process(_record(pr, 1, good, _headers(pr, sent_at, 0)))
    pr.process(_record(pr, 2, b"", _headers(pr, sent_at + timedelta(hours=12), None)))
    kinds = {a.kind for a in pr.out.alerts}
    assert {"sla.at_risk", "sla.internal_missed", "sla.breached"} <= kinds
    assert pr.dead_letter_reasons == {reason: 1}


def test_a_bad_header_moves_no_clock(processors: Processors) -> None:
    pr = processors
    pr.process(_record(pr, 0, b"", _headers(pr, T, None)))
    assert pr.partitions[0].clock.now() == T
    ahead = [(HEADER, header_value(T + timedelta(hours=1))), (COVER_HEADER, b"f;x")]
    pr.process(_record(pr, 1, b"", ahead))
    assert pr.partitions[0].clock.now() == T
    assert pr.dead_letter_reasons == {"bad_header": 1}


def test_a_marker_that_does_not_parse_starts_the_partition_afresh(
    processors: Processors,
) -> None:
    pr = processors
    pr.markers.put("0", {"p": 0, "s": "not a time", "o": "x"}, 0)
    state = pr.partition(0)
    assert (state.offset, state.clock.now(), state.sources) == (-1, None, {})
    assert pr.bad_markers == 1


def test_another_practice_stamped_ahead_does_not_fire_a_deadline_early(
    processors: Processors,
) -> None:
    """Issue #21: a login from practice ZZZ stamped minutes ahead (within the skew) carried the
    watermark past P001's at-risk instant, which fired before its wall-clock time."""
    pr = processors
    now = datetime.now(UTC).replace(microsecond=0)
    sent_at = now - timedelta(minutes=48)  # 100 business minutes, at risk at half: now + 2 min
    config = pr.practices.for_practice("P001")
    at_risk = config.sla.at_risk_at(config.calendar, sent_at)
    zzz_at = now + timedelta(minutes=4, seconds=50)
    assert now < at_risk < zzz_at, "the set-up puts P001's at-risk instant inside the skew"

    message = _clean(
        pr, event_id="m1", event_type="message.sent", occurred_at=sent_at.isoformat(),
        thread_id="th-1", message_id="msg-1", category="clinical",
    )  # fmt: skip
    pr.process(_record(pr, 0, message, _headers(pr, sent_at, 0)))
    login = _clean(pr, event_id="z1", practice_id="ZZZ", occurred_at=zzz_at.isoformat())
    # Its watermark says ZZZ's time: every source is caught up and this is the newest event.
    pr.process(_record(pr, 1, login, _headers(pr, zzz_at, 1)))
    pr.process(_record(pr, 2, b"", _headers(pr, zzz_at, None)))  # the caught-up announcement
    clock = pr.partitions[0].clock
    assert clock.now() is not None and clock.now() <= datetime.now(UTC)
    assert not [a for a in pr.out.alerts if a.practice_id == "P001"], "nothing fired early"
    assert not pr.dead_letter_reasons
    # Once the clock passes the instant (and the SLA hold), the alert fires: the set-up does
    # raise one.
    hold = timedelta(seconds=pr.settings.sla_alert_hold_seconds)
    pr.engine.advance(at_risk + hold + timedelta(seconds=1), 0)
    assert [a.kind for a in pr.out.alerts if a.practice_id == "P001"] == ["sla.at_risk"]


def test_the_rules_clock_follows_only_the_sources_the_rules_read(processors: Processors) -> None:
    """SPEC §7.1: a backlogged EHR feed (its raw partitions behind, their watermark a day old)
    holds the partition clock back but not the SLA rules, which read portal events only."""
    from streams.watermark import raw_index

    pr = processors
    index = raw_index(pr.settings.topics.raw.values(), pr.settings.raw_partitions)
    ehr = pr.settings.topics.raw["ehr"]
    ehr_mask = sum(1 << i for tp, i in index.items() if tp.topic == ehr)
    all_mask = (1 << pr.raw_count) - 1
    message = _clean(
        pr, event_id="m1", event_type="message.sent", occurred_at=T.isoformat(),
        thread_id="th-1", message_id="msg-1", category="clinical",
    )  # fmt: skip
    portal_time = T + timedelta(hours=2)  # past the at-risk (50 min) and internal (100 min) dues
    everyone_behind = [(HEADER, header_value(T - timedelta(days=1))),
                       (COVER_HEADER, f"{all_mask:x};0".encode())]  # fmt: skip
    pr.process(_record(pr, 0, b"", everyone_behind))
    # Every feed but the EHR moves on; the EHR's partitions still hold a day-old backlog.
    others = [(HEADER, header_value(portal_time)),
              (COVER_HEADER, f"{all_mask & ~ehr_mask:x};0".encode())]  # fmt: skip
    pr.process(_record(pr, 1, message, others))
    pr.process(_record(pr, 2, b"", others))  # the next announcement: the clock steps again
    state = pr.partitions[0]
    assert state.clock.now() == T - timedelta(days=1), "the partition clock waits for the EHR"
    assert state.rule_clock is not None and state.rule_clock.now() == portal_time
    kinds = [a.kind for a in pr.out.alerts]
    assert kinds == ["sla.at_risk", "sla.internal_missed"], "the rules ran on the portal's clock"


def test_positions_are_forgotten_after_an_insert_still_running(processors: Processors) -> None:
    """A stop cuts a batch short and releases the checkpoint lock while its insert goes on on
    the database thread; the revocation's forget must come after that insert, not beside it
    (beside it, the insert's skip of rows already written saw no positions: rows twice)."""
    order: list[str] = []

    class Positions:  # the sink's position memory, as far as a revocation touches it
        def forget(self) -> None:
            order.append(f"forget on {threading.current_thread().name}")

    insert_running, release = threading.Event(), threading.Event()

    def insert() -> None:
        insert_running.set()
        release.wait(10)
        order.append("insert done")

    processors.events_sink = Positions()  # type: ignore[assignment]
    in_flight = processors.rt.db_executor.submit(insert)
    assert insert_running.wait(10)

    async def revoke() -> None:
        task = asyncio.ensure_future(processors.on_revoked(frozenset()))
        await asyncio.sleep(0.2)  # the revocation now waits for the database thread
        assert order == []
        release.set()
        await task

    asyncio.run(revoke())
    in_flight.result(10)
    assert order[0] == "insert done"
    assert order[1].startswith("forget on clickhouse")
