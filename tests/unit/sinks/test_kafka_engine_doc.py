"""docs/clickhouse-kafka-engine.md: its materialized views make the rows the sink role writes.

The documented Kafka tables are created here with the Memory engine instead (chDB cannot reach
a broker), and the bytes the processors put on each topic are inserted in the documented
format; the views then write into tables made by the pipeline's own migrations, and every row
must equal the sink role's row for the same record.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.live import LiveRow
from portal_pulse.domain.records import Alert, ResponseFact
from sinks.migrate import migrate
from sinks.rows import (
    ALERT_COLUMNS,
    LIVE_METRIC_COLUMNS,
    RESPONSE_COLUMNS,
    alert_row,
    live_row,
    response_row,
)
from streams.codecs import live_to_bytes, response_to_bytes

DOC = Path(__file__).resolve().parents[3] / "docs" / "clickhouse-kafka-engine.md"
AT = datetime(2026, 3, 2, 14, 5, 7, 123000, tzinfo=UTC)


def _blocks() -> dict[str, str]:
    """Each ```sql block of the doc, by the Kafka table it creates, with the engine swapped."""
    found: dict[str, str] = {}
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S):
        queue = re.search(r"CREATE TABLE (\w+)", block)
        assert queue, block
        local = re.sub(r"ENGINE = Kafka\s+SETTINGS.*?;", "ENGINE = Memory;", block, flags=re.S)
        found[queue.group(1)] = local
    return found


def _install(ch: Client, sql: str) -> None:
    for statement in (s.strip() for s in sql.split(";")):
        if statement:
            ch.command(statement)


@pytest.fixture
def migrated(empty_database: Client) -> Client:
    migrate(empty_database)
    return empty_database


def _normal(row: list[Any] | tuple[Any, ...]) -> list[Any]:
    """Compare instants as UTC milliseconds whatever tzinfo the driver attached."""
    out: list[Any] = []
    for v in row:
        if isinstance(v, datetime):
            v = int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() * 1000)
        out.append(v)
    return out


def test_the_doc_names_a_view_for_each_json_topic_and_the_alerts() -> None:
    assert set(_blocks()) == {"message_responses_queue", "live_metrics_queue", "alerts_queue"}


def test_response_facts_from_their_json_equal_the_sink_rows(migrated: Client) -> None:
    facts = [
        ResponseFact(
            response_id=f"r{i}",
            practice_id="p1",
            thread_id=f"t{i}",
            patient_pseudonym="ps-abc",
            category="clinical",
            routed_pool="nurse",
            replied_by_pool="provider",
            first_message_at=AT,
            clock_started_at=AT,
            replied_at=AT.replace(hour=16 + i),
            messages_answered=1 + i,
            response_business_minutes=61.5 + i,
            response_wall_minutes=122.25,
            internal_due_at=AT,
            external_due_at=AT,
            met_internal_target=i == 0,
            met_external_promise=i == 1,
        )
        for i in range(2)
    ]
    # A fact rewritten by late data and one withdrawn: their own versions (issue 20).
    facts.append(dataclasses.replace(facts[0], response_id="r2", updated_at=AT.replace(day=5)))
    facts.append(facts[1].withdraw(AT.replace(day=9)))
    _install(migrated, _blocks()["message_responses_queue"])
    for polled in (facts[:3], facts[3:]):  # two Kafka polls: one block would merge r1's versions
        data = b"\n".join(response_to_bytes(f) for f in polled).decode()
        migrated.command(f"INSERT INTO message_responses_queue FORMAT JSONEachRow {data}")
    got = migrated.query(
        f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM message_responses ORDER BY response_id, version"
    ).result_rows
    want = sorted(facts, key=lambda f: (f.response_id, response_row(f)[-1]))
    assert [_normal(r) for r in got] == [_normal(response_row(f)) for f in want]
    final = migrated.query(
        "SELECT response_id FROM message_responses FINAL WHERE withdrawn_at IS NULL "
        "ORDER BY response_id"
    ).result_rows
    assert final == [("r0",), ("r2",)]


def test_live_metrics_from_their_json_equal_the_sink_rows(migrated: Client) -> None:
    row = LiveRow(
        "p1",
        3,
        date(2026, 3, 2),
        {"logins": 5, "active_patients": 4, "patient_messages": 2, "portal_bookings": 1,
         "total_bookings": 3, "inbound_calls": 7},
        {"logins": 50, "active_patients": 40, "patient_messages": 20, "portal_bookings": 10,
         "total_bookings": 30, "inbound_calls": 70},
        {"provider": 1, "nurse": 2, "front_desk": 0, "billing": 9},
        AT,
    )  # fmt: skip
    _install(migrated, _blocks()["live_metrics_queue"])
    migrated.command(
        f"INSERT INTO live_metrics_queue FORMAT JSONEachRow {live_to_bytes(row).decode()}"
    )
    got = migrated.query(f"SELECT {', '.join(LIVE_METRIC_COLUMNS)} FROM live_metrics").result_rows
    assert [_normal(r) for r in got] == [_normal(live_row(row))]


def test_alert_versions_from_the_view_equal_the_sink_rows(migrated: Client) -> None:
    raised = Alert(
        "a1", "message_sla_missed", "p1", "t1", "ps-abc", "clinical", "nurse", AT, AT, AT
    )
    resolved = raised.resolve(AT, 93.0)  # the same instant: the resolution must still win
    withdrawn = resolved.withdraw(AT)  # and a withdrawal at that instant over the resolution
    versions = (raised, resolved, withdrawn)
    _install(migrated, _blocks()["alerts_queue"])
    queue_columns = [c for c in ALERT_COLUMNS if c != "version"]
    for alert in versions:  # separate inserts, as separate Kafka polls: one block would merge
        migrated.insert(
            "alerts_queue", [[getattr(alert, c) for c in queue_columns]], column_names=queue_columns
        )
    got = migrated.query(
        f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts ORDER BY version"
    ).result_rows
    assert [_normal(r) for r in got] == [_normal(alert_row(a)) for a in versions]
    final = migrated.query(
        "SELECT resolved_at IS NOT NULL, withdrawn_at IS NOT NULL FROM alerts FINAL"
    ).result_rows
    assert final == [(1, 1)]
