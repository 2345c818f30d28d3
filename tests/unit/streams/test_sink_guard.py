"""The sinks parse records of the pipeline's own topics inside their guard (SPEC §9)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Message

from portal_pulse.domain.live import LiveRow
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.settings import Settings
from sinks.batching import ClickHouseTableSink
from sinks.rows import TABLES
from streams.app import build_app
from streams.codecs import alert_from_bytes, alert_to_bytes, live_to_bytes, response_to_bytes
from streams.delivery import DeliveringProducer
from streams.runtime import Runtime
from streams.sink_agents import DeadLetters, TableSinkAgent, check_record

T = datetime(2026, 1, 5, 9, tzinfo=UTC)
ALERT = Alert("a1", "sla.breached", "P001", "t", "f" * 32, "billing", "billing", T, T, T)
FACT = ResponseFact(
    "r1", "P001", "t", "f" * 32, "billing", "billing", "billing", T, T, T, 1, 3.0, 3.0, T, T,
    True, True,
)  # fmt: skip
LIVE = LiveRow("P001", 0, date(2026, 1, 5), {"logins": 1}, {"logins": 2}, {"nurse": 1}, T)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data", web_port=-1, pseudonym_key="k" * 40, topic_prefix="sinkg"
    )
    _app, runtime = build_app(settings, "127.0.0.1:9", role="process")
    yield runtime
    runtime.close()


def _events(topic: str, values: list[bytes | None]) -> list[Message]:
    return [
        Message(topic=topic, partition=0, offset=offset, value=value, headers=[])
        for offset, value in enumerate(values)
    ]


def test_records_as_the_pipeline_writes_them_pass() -> None:
    assert check_record(ALERT) is ALERT
    assert check_record(FACT) is FACT
    assert check_record(LIVE) is LIVE


@pytest.mark.parametrize(
    "record",
    [
        Alert("a1", "k", "P", "t", "p", None, None, datetime(1960, 1, 1, tzinfo=UTC), T, T),
        Alert("a1", "k", "P", "t", "p", None, None, T.replace(tzinfo=None), T, T),
        Alert("a1", 7, "P", "t", "p", None, None, T, T, T),  # type: ignore[arg-type]
        ResponseFact("r", "P", "t", "p", "c", "p", "p", T, T, T, -1, 1.0, 1.0, T, T, True, True),
        ResponseFact("r", "P", "t", "p", "c", "p", "p", T, T, T, 2**40, 1.0, 1.0, T, T, True, True),
        ResponseFact(
            "r", "P", "t", "p", "c", "p", "p", T, T, T, 1, float("nan"), 1.0, T, T, True, True
        ),
        LiveRow("P", 70_000, date(2026, 1, 5), {}, {}, {}, T),
        LiveRow("P", 0, date(2026, 1, 5), {"logins": -1}, {}, {}, T),
        LiveRow("P", 0, date(2026, 1, 5), {"logins": "1"}, {}, {}, T),  # type: ignore[dict-item]
        LiveRow("P", 0, date(1900, 1, 5), {}, {}, {}, T),
    ],
)
def test_values_a_table_cannot_hold_are_refused(record: Any) -> None:
    with pytest.raises(ValueError, match="field"):
        check_record(record)


def test_a_bad_alert_record_is_dead_lettered_and_the_rest_written(
    rt: Runtime, chdb_client: Client
) -> None:
    spec = TABLES["alerts"]
    sink = ClickHouseTableSink(chdb_client, "alerts", spec.columns)
    dead = DeadLetters(rt, DeliveringProducer(rt.settings, rt.bootstrap))
    agent = TableSinkAgent(
        rt, "sink-alerts", rt.settings.topics.alerts, sink,
        lambda b: spec.row(check_record(alert_from_bytes(rt.alert_codec, b))), dead,
    )  # fmt: skip
    good = alert_to_bytes(rt.alert_codec, ALERT)
    early = alert_to_bytes(
        rt.alert_codec,
        Alert("a2", "k", "P", "t", "p", None, None, datetime(1960, 1, 1, tzinfo=UTC), T, T),
    )
    values = [good, b"", None, b"\x00garbage", response_to_bytes(FACT), early, live_to_bytes(LIVE)]
    batch = agent.batch_of(_events(rt.settings.topics.alerts, values))
    assert len(batch) == 1
    assert dead.reasons == {"bad_internal_record": len(values) - 1}
    assert dead.pending == len(values) - 1
    assert agent.skipped == len(values) - 1
    assert sink.write(batch) == 1


def test_the_dead_letter_sink_skips_a_bad_record_without_a_dead_letter(
    rt: Runtime, chdb_client: Client
) -> None:
    spec = TABLES["dead_letters"]
    agent = TableSinkAgent(
        rt, "sink-dead-letters", rt.settings.topics.dead_letter, ClickHouseTableSink(chdb_client, "dead_letters", spec.columns),
        lambda b: spec.row(rt.dead_letter_codec.decode_record(b)),
    )  # fmt: skip
    batch = agent.batch_of(_events(rt.settings.topics.dead_letter, [b"", json.dumps({}).encode()]))
    assert len(batch) == 0 and agent.skipped == 2
