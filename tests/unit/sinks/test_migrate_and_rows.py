"""Migrations, row shapes and batching sinks against a real embedded ClickHouse (chDB).

All tests share one database (see conftest); each isolates itself with unique ids and topics.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.reports.local_time import local_midnights
from schemas.catalogue import event_types
from schemas.model import CleanEvent
from sinks.batching import POSITION_COLUMNS, Batch, ClickHouseTableSink, SinkWriteError
from sinks.client import connect
from sinks.migrate import MIGRATIONS_DIR, migrate, split_statements
from sinks.rows import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    EVENT_SOURCE_COLUMNS,
    RESPONSE_COLUMNS,
    alert_row,
    dead_letter_row,
    event_row,
    response_row,
    version_of,
)

T0 = datetime(2026, 1, 5, 14, 30, 0, 123000, tzinfo=UTC)
PSEUDONYM = "0123456789abcdef0123456789abcdef"

DETAILS: dict[str, dict[str, Any]] = {
    "patient.seen": {"encounter_id": "enc-1"},
    "portal.invited": {"method": "qr"},
    "portal.enrolled": {"method": None},
    "portal.login": {"channel": "mobile_app"},
    "app.installed": {"platform": "ios"},
    "message.sent": {"thread_id": "th-1", "message_id": "m-1", "category": "clinical"},
    "message.replied": {
        "thread_id": "th-1",
        "message_id": "m-2",
        "staff_pool": "nurse",
        "automated": True,
    },
    "result.posted": {"result_id": "r-1"},
    "result.viewed": {"result_id": "r-1"},
    "result.staff_contacted": {"result_id": "r-1"},
    "appointment.booked": {
        "appointment_id": "a-1",
        "channel": "portal",
        "appointment_type": "follow_up",
    },
    "payment.made": {
        "payment_id": "pay-1",
        "amount_cents": 2_345_000,
        "currency": "USD",
        "channel": "portal",
    },
    "phone.call": {"call_id": "c-1", "direction": "inbound", "reason": "billing"},
    "refill.requested": {"refill_id": "rf-1", "channel": "portal"},
    "record.viewed": {},
    "survey.response": {"survey_id": "s-1", "score": 4},
}


def uid() -> str:
    return uuid.uuid4().hex[:12]


def naive(at: datetime) -> datetime:
    """How clickhouse-connect returns DateTime64(3, 'UTC') values."""
    return at.astimezone(UTC).replace(tzinfo=None)


def columns(ch: Client, table: str) -> dict[str, str]:
    rows = ch.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = %(t)s ORDER BY position",
        parameters={"t": table},
    ).result_rows
    return dict(rows)


def count(ch: Client, sql: str, **params: Any) -> int:
    return ch.query(sql, parameters=params).result_rows[0][0]


def event(event_type: str, practice: str, event_id: str | None = None) -> CleanEvent:
    return CleanEvent(
        event_id or f"{practice}-{event_type}",
        event_type,
        T0,
        practice,
        PSEUDONYM,
        dict(DETAILS[event_type]),
    )


# -- client and migrations -----------------------------------------------------------------------


def test_connect_caches_the_embedded_client_per_dsn(ch: Client, chdb_dsn: str) -> None:
    assert connect(chdb_dsn) is connect(chdb_dsn)


def test_connect_refuses_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported ClickHouse URL"):
        connect("ftp://clickhouse.example")


def test_migrate_applies_once(empty_database: Client) -> None:
    versions = sorted(int(p.name[:4]) for p in MIGRATIONS_DIR.glob("*.sql"))
    assert versions and versions[0] == 1
    assert migrate(empty_database) == versions
    assert migrate(empty_database) == []
    assert migrate(empty_database) == []
    recorded = empty_database.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in recorded.result_rows] == versions
    tables = {r[0] for r in empty_database.query("SHOW TABLES").result_rows}
    assert {"events", "alerts", "message_responses", "dead_letters"} <= tables


def test_shared_database_is_migrated(ch: Client) -> None:
    assert migrate(ch) == []


def test_migration_file_with_a_bad_name_is_refused(
    ch: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1;\n")
    monkeypatch.setattr("sinks.migrate.MIGRATIONS_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"NNNN_name\.sql"):
        migrate(ch)


def test_split_statements() -> None:
    sql = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory;\n"
        "\n"
        "  -- another\n"
        "CREATE TABLE b\n(\n  y UInt8\n)\nENGINE = Memory;   \n"
        "SELECT 1\n"
    )
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT ';') ENGINE = Memory",
        "CREATE TABLE b\n(\n  y UInt8\n)\nENGINE = Memory",
        "SELECT 1",
    ]


def test_tables_have_the_expected_columns(ch: Client) -> None:
    assert list(columns(ch, "events")) == [
        *EVENT_COLUMNS,
        "ingested_at",
        *POSITION_COLUMNS,
        *EVENT_SOURCE_COLUMNS,
    ]
    assert list(columns(ch, "alerts")) == list(ALERT_COLUMNS)
    assert list(columns(ch, "message_responses")) == list(RESPONSE_COLUMNS)
    assert list(columns(ch, "dead_letters")) == list(DEAD_LETTER_COLUMNS)


def test_column_types(ch: Client) -> None:
    events = columns(ch, "events")
    assert events["occurred_at"] == "DateTime64(3, 'UTC')"
    assert events["patient_pseudonym"] == "String"
    assert events["amount_cents"] == "Int64"
    alerts = columns(ch, "alerts")
    assert alerts["resolved_at"] == "Nullable(DateTime64(3, 'UTC'))"
    assert alerts["due_at"] == "DateTime64(3, 'UTC')"
    assert alerts["response_business_minutes"] == "Nullable(Float64)"
    engines = dict(
        ch.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    )
    assert engines["alerts"].startswith("ReplacingMergeTree(version)")
    assert engines["message_responses"].startswith("ReplacingMergeTree(version)")
    assert engines["rollup_sla"].startswith("ReplacingMergeTree(version, withdrawn)")
    for table in ("events", "alerts", "message_responses", "dead_letters"):
        assert "non_replicated_deduplication_window" in engines[table], table
    for table in ("alerts", "message_responses"):
        assert columns(ch, table)["withdrawn_at"] == "Nullable(DateTime64(3, 'UTC'))", table
    assert columns(ch, "message_responses")["updated_at"] == "DateTime64(3, 'UTC')"
    assert not {name for name in engines if name.endswith(("_0008", "_0009"))}


def test_no_table_has_a_place_for_raw_identifiers(ch: Client) -> None:
    rows = ch.query(
        "SELECT table, name FROM system.columns WHERE database = currentDatabase()"
    ).result_rows
    names = {name for _, name in rows}
    assert "patient_id" not in names
    assert "raw" not in names


# -- event rows ----------------------------------------------------------------------------------


def test_event_row_covers_every_detail_field() -> None:
    fields = {f.name for spec in event_types().values() for f in spec.fields}
    assert fields <= set(EVENT_COLUMNS)


@pytest.mark.parametrize("event_type", sorted(DETAILS))
def test_event_row_inserts_for_every_type(ch: Client, event_type: str) -> None:
    practice = f"p-{uid()}"
    ev = event(event_type, practice)
    row = event_row(ev)
    assert len(row) == len(EVENT_COLUMNS)
    ch.insert("events", [row], column_names=list(EVENT_COLUMNS))
    result = ch.query(
        "SELECT * EXCEPT ingested_at FROM events WHERE practice_id = %(p)s",
        parameters={"p": practice},
    )
    assert len(result.result_rows) == 1
    stored = dict(zip(result.column_names, result.result_rows[0], strict=True))
    assert stored["event_id"] == ev.event_id
    assert stored["event_type"] == event_type
    assert stored["occurred_at"].replace(tzinfo=None) == naive(T0)
    assert stored["patient_pseudonym"] in (PSEUDONYM, PSEUDONYM.encode())
    for name, value in DETAILS[event_type].items():
        if value is None:
            assert stored[name] == ""
        elif isinstance(value, bool):
            assert stored[name] == int(value)
        else:
            assert stored[name] == value, name


def test_event_row_defaults_for_absent_fields() -> None:
    row = dict(zip(EVENT_COLUMNS, event_row(event("record.viewed", "p")), strict=True))
    assert row["automated"] == 0
    assert row["amount_cents"] == 0
    assert row["score"] == 0
    assert row["method"] == ""
    assert row["thread_id"] == ""
    replied = event("message.replied", "p")
    replied.details["automated"] = False
    assert dict(zip(EVENT_COLUMNS, event_row(replied), strict=True))["automated"] == 0


# -- batching and deduplication ------------------------------------------------------------------


def event_batch(practice: str, topic: str, n: int = 3, first_offset: int = 0) -> Batch:
    batch = Batch()
    for i in range(n):
        ev = event("portal.login", practice, f"{practice}-{i}")
        batch.add(event_row(ev), topic, 0, first_offset + i)
    return batch


def rows_for(ch: Client, practice: str) -> int:
    return count(ch, "SELECT count() FROM events WHERE practice_id = %(p)s", p=practice)


def test_batch_token_from_positions() -> None:
    batch = Batch()
    batch.add(["a"], "topic-a", 1, 10)
    batch.add(["b"], "topic-a", 1, 7)
    batch.add(["c"], "topic-b", 0, 3)
    batch.add(["d"])  # no position
    assert len(batch) == 4
    assert batch.positions == {("topic-a", 1): (7, 10), ("topic-b", 0): (3, 3)}
    assert batch.token("events") == "events|topic-a:1:7-10,topic-b:0:3-3"
    assert Batch().token("events") is None


def test_same_batch_written_twice_yields_rows_once(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    sink = ClickHouseTableSink(ch, "events", EVENT_COLUMNS, backoff=0)
    batch = event_batch(practice, topic)
    sink.write(batch)
    sink.write(batch)
    assert rows_for(ch, practice) == 3  # counted without FINAL: the insert itself was dropped


def test_the_token_not_the_content_decides(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    sink = ClickHouseTableSink(ch, "events", EVENT_COLUMNS, backoff=0)
    sink.write(event_batch(practice, topic, n=2))
    # Same positions (a replay of the same offsets), rebuilt rows: dropped.
    sink.write(event_batch(practice, topic, n=2))
    assert rows_for(ch, practice) == 2
    # The next offsets are a new batch.
    sink.write(event_batch(practice + "-next", topic, n=2, first_offset=2))
    assert rows_for(ch, practice + "-next") == 2


def _positioned(practice: str, topic: str, offsets: list[int]) -> Batch:
    """Events rows with clean-topic positions, January for even offsets and February for odd:
    one insert of them writes two parts, committed one after the other."""
    batch = Batch()
    for o in offsets:
        ev = replace(event("portal.login", practice, f"{practice}-{o}"), occurred_at=T0)
        if o % 2:
            ev = replace(ev, occurred_at=T0 + timedelta(days=31))
        batch.add([*event_row(ev), "", -1], topic, 0, o)
    return batch


def test_a_cut_short_insert_leaves_holes_the_next_owner_fills(ch: Client) -> None:
    """ClickHouse commits an insert's parts (one per month here) one by one: a crash can leave a
    batch's February rows written and its January rows not. The next owner re-reads from the
    group's committed offset and writes exactly the missing ones; the highest offset written
    is not a position below which everything is in the table."""
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    columns = (*EVENT_COLUMNS, *EVENT_SOURCE_COLUMNS)
    # What the crash left of the batch of offsets 10-15: only February's part.
    ClickHouseTableSink(ch, "events", columns, position_columns=True, backoff=0).write(
        _positioned(practice, topic, [11, 13, 15])
    )
    by_max = ClickHouseTableSink(ch, "events", columns, position_columns=True, backoff=0)
    by_max.load_positions(topic)
    assert by_max.is_written(topic, 0, 12), "the highest offset alone says 12 is in the table"

    nxt = ClickHouseTableSink(
        ch, "events", columns, position_columns=True, backoff=0, floors=lambda t: {0: 10}
    )
    assert nxt.write(_positioned(practice, topic, list(range(10, 18)))) == 5  # 10, 12, 14, 16, 17
    offsets = ch.query(
        "SELECT kafka_offset FROM events WHERE practice_id = {p:String} ORDER BY kafka_offset",
        parameters={"p": practice},
    ).result_rows
    assert [o for (o,) in offsets] == list(range(10, 18)), "each offset once, none missing"


def test_after_insert_failure_retries_without_duplicates(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    calls: list[int] = []

    def lose_the_first_ack(batch: Batch) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("acknowledgement lost")

    sink = ClickHouseTableSink(
        ch, "events", EVENT_COLUMNS, backoff=0, after_insert=lose_the_first_ack
    )
    sink.write(event_batch(practice, topic, n=4))
    assert calls == [4, 4]  # the batch was sent again
    assert sink.rows_written == 4
    assert rows_for(ch, practice) == 4


def test_persistent_failure_raises_sink_write_error(ch: Client) -> None:
    def always_fail(batch: Batch) -> None:
        raise ConnectionError("down")

    sink = ClickHouseTableSink(
        ch, "events", EVENT_COLUMNS, attempts=3, backoff=0, after_insert=always_fail
    )
    with pytest.raises(SinkWriteError, match="3 times"):
        sink.write(event_batch(f"p-{uid()}", f"t-{uid()}"))
    assert sink.rows_written == 0


def test_empty_batch_writes_nothing(ch: Client) -> None:
    calls: list[Batch] = []
    sink = ClickHouseTableSink(ch, "events", EVENT_COLUMNS, after_insert=calls.append)
    sink.write(Batch())
    assert calls == []
    assert sink.rows_written == 0


# -- alerts --------------------------------------------------------------------------------------


def make_alert(alert_id: str, practice: str) -> Alert:
    return Alert(
        alert_id=alert_id,
        kind="sla.breached",
        practice_id=practice,
        subject_id="th-1",
        patient_pseudonym=PSEUDONYM,
        category="billing",
        staff_pool="billing",
        due_at=T0,
        raised_at=T0 + timedelta(seconds=1),
        updated_at=T0 + timedelta(seconds=1),
    )


def final_alerts(ch: Client, practice: str) -> list[dict[str, Any]]:
    result = ch.query(
        "SELECT * FROM alerts FINAL WHERE practice_id = %(p)s", parameters={"p": practice}
    )
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


@pytest.mark.parametrize("resolution_first", [False, True], ids=["in-order", "out-of-order"])
def test_alert_raise_then_resolution_is_one_resolved_row(
    ch: Client, resolution_first: bool
) -> None:
    practice, alert_id = f"p-{uid()}", f"al-{uid()}"
    raised = make_alert(alert_id, practice)
    resolved = raised.resolve(T0 + timedelta(hours=2), 95.5)
    order = [resolved, raised] if resolution_first else [raised, resolved]
    for alert in order:  # separate inserts, as the sink would do across flushes
        ch.insert("alerts", [alert_row(alert)], column_names=list(ALERT_COLUMNS))
    (row,) = final_alerts(ch, practice)
    assert row["alert_id"] == alert_id
    assert row["resolved_at"].replace(tzinfo=None) == naive(T0 + timedelta(hours=2))
    assert row["response_business_minutes"] == 95.5
    assert row["due_at"].replace(tzinfo=None) == naive(T0)
    raw_count = count(ch, "SELECT count() FROM alerts WHERE practice_id = %(p)s", p=practice)
    assert raw_count in (1, 2)  # the unmerged versions may still be there without FINAL


def test_resolution_at_the_raise_instant_still_wins(ch: Client) -> None:
    practice, alert_id = f"p-{uid()}", f"al-{uid()}"
    raised = make_alert(alert_id, practice)
    resolved = raised.resolve(raised.raised_at - timedelta(seconds=5))  # updated_at == raised_at
    assert alert_row(resolved)[-1] == alert_row(raised)[-1] + 1
    for alert in (resolved, raised):
        ch.insert("alerts", [alert_row(alert)], column_names=list(ALERT_COLUMNS))
    (row,) = final_alerts(ch, practice)
    assert row["resolved_at"] is not None


def test_alert_without_category_inserts_nulls(ch: Client) -> None:
    practice = f"p-{uid()}"
    alert = Alert(
        alert_id=f"al-{uid()}",
        kind="enrollment.no_first_login",
        practice_id=practice,
        subject_id=PSEUDONYM,
        patient_pseudonym=PSEUDONYM,
        category=None,
        staff_pool=None,
        due_at=T0,
        raised_at=T0,
        updated_at=T0,
    )
    ch.insert("alerts", [alert_row(alert)], column_names=list(ALERT_COLUMNS))
    (row,) = final_alerts(ch, practice)
    assert (row["category"], row["staff_pool"], row["resolved_at"]) == (None, None, None)


@pytest.mark.parametrize("resolved", [False, True], ids=["raised", "resolved"])
def test_a_withdrawal_supersedes_the_version_it_withdraws_in_any_order(
    ch: Client, resolved: bool
) -> None:
    practice, alert_id = f"p-{uid()}", f"al-{uid()}"
    alert = make_alert(alert_id, practice)
    if resolved:
        alert = alert.resolve(alert.raised_at, 12.0)  # resolved at the raise's instant
    withdrawn = alert.withdraw(alert.updated_at)  # and withdrawn at that instant too
    assert alert_row(withdrawn)[-1] > alert_row(alert)[-1]
    for version in (withdrawn, alert):  # the stale version inserted after the withdrawal
        ch.insert("alerts", [alert_row(version)], column_names=list(ALERT_COLUMNS))
    (row,) = final_alerts(ch, practice)
    assert row["withdrawn_at"].replace(tzinfo=None) == naive(alert.updated_at)
    assert (row["resolved_at"] is not None) is resolved


def test_an_alert_raised_again_after_its_withdrawal_stands() -> None:
    alert = make_alert("al", "p")
    withdrawn = alert.withdraw(T0 + timedelta(minutes=5))
    again = replace(alert, staff_pool="nurse", updated_at=T0 + timedelta(minutes=6))
    resolved = again.resolve(T0 + timedelta(minutes=3))  # resolved "before": still later
    versions = [alert_row(v)[-1] for v in (alert, withdrawn, again, resolved)]
    assert versions == sorted(versions) and len(set(versions)) == 4


def test_version_of_is_exact_to_the_millisecond() -> None:
    at = datetime(2004, 10, 27, 8, 38, 15, 853000, tzinfo=UTC)  # at.timestamp() * 1000 falls short
    assert version_of(at, withdrawn=False) == 1098866295853 * 4
    assert version_of(at, withdrawn=True, resolved=True) == 1098866295853 * 4 + 3
    assert version_of(at.replace(tzinfo=None), withdrawn=False) == 1098866295853 * 4


# -- responses and dead letters ------------------------------------------------------------------


def test_response_row_inserts(ch: Client) -> None:
    practice = f"p-{uid()}"
    fact = ResponseFact(
        response_id=f"r-{uid()}",
        practice_id=practice,
        thread_id="th-1",
        patient_pseudonym=PSEUDONYM,
        category="clinical",
        routed_pool="nurse",
        replied_by_pool="provider",
        first_message_at=T0,
        clock_started_at=T0,
        replied_at=T0 + timedelta(hours=3),
        messages_answered=2,
        response_business_minutes=180.0,
        response_wall_minutes=180.0,
        internal_due_at=T0 + timedelta(hours=5),
        external_due_at=T0 + timedelta(hours=9),
        met_internal_target=True,
        met_external_promise=False,
    )
    row = response_row(fact)
    assert row[RESPONSE_COLUMNS.index("met_internal_target")] == 1
    assert row[RESPONSE_COLUMNS.index("met_external_promise")] == 0
    ch.insert("message_responses", [row], column_names=list(RESPONSE_COLUMNS))
    result = ch.query(
        "SELECT messages_answered, met_internal_target, met_external_promise, replied_at "
        "FROM message_responses FINAL WHERE practice_id = %(p)s",
        parameters={"p": practice},
    )
    (stored,) = result.result_rows
    assert stored[:3] == (2, 1, 0)
    assert stored[3].replace(tzinfo=None) == naive(T0 + timedelta(hours=3))


def make_fact(practice: str, response_id: str, **changes: Any) -> ResponseFact:
    fact = ResponseFact(
        response_id=response_id,
        practice_id=practice,
        thread_id="th-1",
        patient_pseudonym=PSEUDONYM,
        category="clinical",
        routed_pool="nurse",
        replied_by_pool="provider",
        first_message_at=T0,
        clock_started_at=T0,
        replied_at=T0 + timedelta(hours=3),
        messages_answered=1,
        response_business_minutes=180.0,
        response_wall_minutes=180.0,
        internal_due_at=T0 + timedelta(hours=5),
        external_due_at=T0 + timedelta(hours=9),
        met_internal_target=True,
        met_external_promise=True,
    )
    return replace(fact, **changes)


def final_facts(ch: Client, practice: str) -> list[tuple[Any, ...]]:
    return ch.query(
        "SELECT response_id, replied_at, withdrawn_at, updated_at FROM message_responses FINAL "
        "WHERE practice_id = %(p)s ORDER BY response_id",
        parameters={"p": practice},
    ).result_rows


def test_a_response_fact_keeps_its_latest_version_whatever_the_insert_order(ch: Client) -> None:
    """First written (updated_at is its reply), rewritten by a late reply (an earlier reply
    answers the clock), then withdrawn: every order of inserts leaves the withdrawal."""
    practice = f"p-{uid()}"
    first = make_fact(practice, "r-1")
    rewritten = replace(
        first, replied_at=T0 + timedelta(hours=1), updated_at=T0 + timedelta(hours=4)
    )
    withdrawn = rewritten.withdraw(T0 + timedelta(hours=4))  # at the rewrite's instant
    assert response_row(first)[RESPONSE_COLUMNS.index("updated_at")] == first.replied_at
    for fact in (withdrawn, first, rewritten):
        ch.insert("message_responses", [response_row(fact)], column_names=list(RESPONSE_COLUMNS))
    (row,) = final_facts(ch, practice)
    assert row[1:] == (
        naive(T0 + timedelta(hours=1)),
        naive(T0 + timedelta(hours=4)),
        naive(T0 + timedelta(hours=4)),
    )
    # The rewrite wins over the first version, whatever came first.
    other = f"p-{uid()}"
    for fact in (replace(rewritten, practice_id=other), replace(first, practice_id=other)):
        ch.insert("message_responses", [response_row(fact)], column_names=list(RESPONSE_COLUMNS))
    (row,) = final_facts(ch, other)
    assert row[1:] == (naive(T0 + timedelta(hours=1)), None, naive(T0 + timedelta(hours=4)))


def test_a_writer_without_the_new_columns_still_inserts_facts(ch: Client) -> None:
    """A sink of the previous release (no withdrawn_at, updated_at, version) during an upgrade:
    the defaults give the fact its reply's instant and version."""
    practice = f"p-{uid()}"
    fact = make_fact(practice, "r-old")
    old_columns = [
        c for c in RESPONSE_COLUMNS if c not in ("withdrawn_at", "updated_at", "version")
    ]
    row = dict(zip(RESPONSE_COLUMNS, response_row(fact), strict=True))
    ch.insert("message_responses", [[row[c] for c in old_columns]], column_names=old_columns)
    stored = ch.query(
        "SELECT updated_at, version FROM message_responses WHERE practice_id = %(p)s",
        parameters={"p": practice},
    ).result_rows
    assert stored == [(naive(fact.replied_at), row["version"])]


def test_migration_0009_keeps_what_an_older_database_holds(
    empty_database: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at migration 0008 with alerts (versions of the old scale) and facts: after
    0009 every alert and fact is still there, a raise sent again cannot reopen a resolved
    alert, facts are versioned by their reply, and running 0009 again whole changes nothing."""
    older = tmp_path / "migrations"
    older.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) <= 8:
            (older / path.name).write_text(path.read_text())
    monkeypatch.setattr("sinks.migrate.MIGRATIONS_DIR", older)
    assert max(migrate(empty_database)) == 8
    db = empty_database
    # What sync_practices writes (it also refreshes the stored monthly rows of migration 0010,
    # which this schema does not have yet): the default zone and its local midnights.
    db.insert(
        "practices",
        [["default", "UTC", 0, datetime.now(UTC)]],
        column_names=["practice_id", "timezone", "roster_lookback_days", "updated_at"],
    )
    db.insert(
        "local_days",
        [["UTC", start, day] for start, day in local_midnights("UTC")],
        column_names=["timezone", "starts_at", "local_date"],
    )
    practice = f"p-{uid()}"
    raised = make_alert("al-1", practice)
    resolved = raised.resolve(T0 + timedelta(hours=2), 30.0)
    old_columns = [c for c in ALERT_COLUMNS if c != "withdrawn_at"]
    for alert in (raised, resolved):
        row = dict(zip(ALERT_COLUMNS, alert_row(alert), strict=True))
        row["version"] = int(alert.updated_at.timestamp() * 1000) * 2 + (alert is resolved)
        db.insert("alerts", [[row[c] for c in old_columns]], column_names=old_columns)
    fact = make_fact(practice, "r-1")
    fact_columns = [
        c for c in RESPONSE_COLUMNS if c not in ("withdrawn_at", "updated_at", "version")
    ]
    fact_row = dict(zip(RESPONSE_COLUMNS, response_row(fact), strict=True))
    db.insert("message_responses", [[fact_row[c] for c in fact_columns]], column_names=fact_columns)

    monkeypatch.setattr("sinks.migrate.MIGRATIONS_DIR", MIGRATIONS_DIR)
    assert 9 in migrate(db)

    def state() -> tuple[Any, ...]:
        alerts = db.query(
            "SELECT alert_id, resolved_at, withdrawn_at, version FROM alerts FINAL "
            "WHERE practice_id = %(p)s",
            parameters={"p": practice},
        ).result_rows
        facts = db.query(
            "SELECT response_id, updated_at, withdrawn_at, version FROM message_responses FINAL "
            "WHERE practice_id = %(p)s",
            parameters={"p": practice},
        ).result_rows
        sla = db.query(
            "SELECT kind, id, version, withdrawn FROM rollup_sla FINAL ORDER BY kind, id"
        ).result_rows
        return alerts, facts, sla

    alerts, facts, sla = state()
    assert alerts == [("al-1", naive(resolved.resolved_at), None, alert_row(resolved)[-1])]
    assert facts == [("r-1", naive(fact.replied_at), None, fact_row["version"])]
    assert sla == [
        ("breach", "al-1", alert_row(resolved)[-1], 0),
        ("response", "r-1", fact_row["version"], 0),
    ]
    db.insert("alerts", [alert_row(raised)], column_names=list(ALERT_COLUMNS))  # sent again
    assert state() == (alerts, facts, sla)

    for statement in split_statements((MIGRATIONS_DIR / "0009_withdrawn.sql").read_text()):
        db.command(statement)
    assert state() == (alerts, facts, sla)
    tables = {r[0] for r in db.query("SHOW TABLES").result_rows}
    assert not {t for t in tables if t.endswith(("_0008", "_0009"))}


def dead_letter(**overrides: Any) -> dict[str, Any]:
    record = {
        "reason": "missing_field",
        "detail": "missing required field thread_id",
        "field": "thread_id",
        "source_topic": f"t-{uid()}",
        "source_partition": 1,
        "source_offset": 42,
        "event_id": "ev-1",
        "practice_id": "practice-a",
        "received_at": T0,
        "raw": b'{"patient_id": "MRN-SECRET-777"}',
    }
    record.update(overrides)
    return record


def test_dead_letter_row_has_no_raw_bytes() -> None:
    record = dead_letter()
    row = dead_letter_row(record)
    assert "raw" not in DEAD_LETTER_COLUMNS
    assert len(row) == len(DEAD_LETTER_COLUMNS)
    assert record["raw"] not in row
    assert not any(isinstance(v, bytes | bytearray) for v in row)
    assert not any("MRN-SECRET-777" in str(v) for v in row)


def test_dead_letter_row_inserts_with_nulls_as_empty(ch: Client) -> None:
    record = dead_letter(field=None, event_id=None, practice_id=None, reason="undecodable")
    row = dead_letter_row(record)
    ch.insert("dead_letters", [row], column_names=list(DEAD_LETTER_COLUMNS))
    result = ch.query(
        "SELECT reason, field, event_id, practice_id, source_offset FROM dead_letters "
        "WHERE source_topic = %(t)s",
        parameters={"t": record["source_topic"]},
    )
    assert result.result_rows == [("undecodable", "", "", "", 42)]


# -- exactly-once positions ----------------------------------------------------------------------


def test_a_restarted_sink_skips_positions_already_in_the_table(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    ClickHouseTableSink(ch, "events", EVENT_COLUMNS, position_columns=True).write(
        event_batch(practice, topic, n=5)
    )
    # After a crash the batch boundaries differ: offsets 3..7 come again with new rows.
    restarted = ClickHouseTableSink(ch, "events", EVENT_COLUMNS, position_columns=True)
    batch = Batch()
    for i in range(3, 8):
        batch.add(event_row(event("portal.login", practice, f"{practice}-{i}")), topic, 0, i)
    assert restarted.write(batch) == 3
    assert restarted.rows_skipped == 2
    assert rows_for(ch, practice) == 8  # offsets 0..7 once each, without FINAL


def test_sink_positions_table_serves_tables_without_position_columns(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    first = ClickHouseTableSink(ch, "alerts", ALERT_COLUMNS)
    batch = Batch()
    for i in range(3):
        batch.add(alert_row(make_alert(f"a-{practice}-{i}", practice)), topic, 1, i)
    first.write(batch)
    restarted = ClickHouseTableSink(ch, "alerts", ALERT_COLUMNS)
    assert restarted.write(batch) == 0
    assert restarted.rows_skipped == 3
    n = count(ch, "SELECT count() FROM alerts WHERE practice_id = %(p)s", p=practice)
    assert n == 3


def test_a_failing_insert_is_retried_until_it_succeeds(ch: Client) -> None:
    practice, topic = f"p-{uid()}", f"t-{uid()}"
    failures = iter([True, True, True, False])

    def flaky(batch: Batch) -> None:
        if next(failures):
            raise ConnectionError("ClickHouse is down")

    sink = ClickHouseTableSink(
        ch, "events", EVENT_COLUMNS, position_columns=True, backoff=0, after_insert=flaky
    )
    assert sink.write(event_batch(practice, topic, n=2)) == 2
    assert sink.errors == 3
    assert rows_for(ch, practice) == 2
