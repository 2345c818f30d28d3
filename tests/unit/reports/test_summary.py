"""The landing summary (demo): withdrawn alerts and response facts (SPEC §7.1) are counted
apart and in no figure."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.reports.summary import print_landing_summary
from sinks.migrate import migrate
from sinks.rows import ALERT_COLUMNS, RESPONSE_COLUMNS, alert_row, response_row

AT = datetime(2026, 1, 5, 15, tzinfo=UTC)


@pytest.fixture
def db(chdb_client: Client) -> Iterator[Client]:
    """A database of its own on the session's chDB path: the summary reads every practice."""
    name = f"summary_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_client.path}", database=name)  # type: ignore[attr-defined]
    try:
        migrate(client)
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def test_withdrawn_alerts_and_facts_are_counted_apart(
    db: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    def alert(n: int) -> Alert:
        return Alert(f"a{n}", "sla.breached", "P1", f"t{n}", "ps", "clinical", "nurse", AT, AT, AT)

    def fact(n: int, minutes: float) -> ResponseFact:
        return ResponseFact(
            f"r{n}", "P1", f"t{n}", "ps", "clinical", "nurse", "nurse", AT, AT,
            AT + timedelta(minutes=minutes), 1, minutes, minutes, AT, AT, True, True,
        )  # fmt: skip

    alerts = [alert(1), alert(2).resolve(AT + timedelta(hours=1)), alert(3)]
    alerts.append(alerts[2].withdraw(AT + timedelta(hours=2)))
    facts = [fact(1, 60.0), fact(2, 600.0)]
    facts.append(facts[1].withdraw(AT + timedelta(hours=12)))
    for a in alerts:  # one insert per version, as the sink's batches come
        db.insert("alerts", [alert_row(a)], column_names=list(ALERT_COLUMNS))
    for f in facts:
        db.insert("message_responses", [response_row(f)], column_names=list(RESPONSE_COLUMNS))

    print_landing_summary(db)
    lines = capsys.readouterr().out.splitlines()
    alerts_at = lines.index("Alerts")
    assert lines[alerts_at + 1].split() == ["kind", "raised", "open", "withdrawn"]
    assert lines[alerts_at + 2].split() == ["sla.breached", "2", "1", "1"]
    responses_at = lines.index("Message responses")
    assert lines[responses_at + 2].split() == ["P1", "1", "1.0", "1.0", "1.0", "1.0"]
