"""Open follow-ups read from chDB: which alerts, days overdue against the data clock, formats."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.followups import (
    APP_NOT_INSTALLED,
    DORMANT,
    INVITE_NOT_ACTIVATED,
    NO_FIRST_LOGIN,
)
from portal_pulse.domain.records import Alert
from portal_pulse.reports.alerts import ALERT_FIELDS
from portal_pulse.reports.followups import (
    data_clock,
    fetch_followups,
    followups_command,
    format_followups,
)
from schemas.model import CleanEvent
from sinks.rows import ALERT_COLUMNS, EVENT_COLUMNS, alert_row, event_row

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def practice_id() -> str:
    return f"practice-{uuid.uuid4().hex[:10]}"


def pseudonym(n: int) -> str:
    return f"{n:032x}"


def followup(practice: str, n: int, kind: str, due: datetime) -> Alert:
    return Alert(
        alert_id=f"{kind}-{n}",
        kind=kind,
        practice_id=practice,
        subject_id=pseudonym(n),
        patient_pseudonym=pseudonym(n),
        category=None,
        staff_pool="front_desk",
        due_at=due,
        raised_at=due,
        updated_at=due,
    )


def insert_alerts(client: Client, *alerts: Alert) -> None:
    client.insert("alerts", [alert_row(a) for a in alerts], column_names=list(ALERT_COLUMNS))


def insert_event(client: Client, practice: str, at: datetime) -> None:
    event = CleanEvent(uuid.uuid4().hex, "portal.login", at, practice, pseudonym(99))
    client.insert("events", [event_row(event)], column_names=list(EVENT_COLUMNS))


@pytest.fixture
def practice(chdb_client: Client) -> str:
    """A practice with one of each situation the report must tell apart."""
    p = practice_id()
    resolved = followup(p, 5, NO_FIRST_LOGIN, T0 - 3 * DAY)
    sla = Alert(
        "sla-1", "sla.breached", p, "thread-1", pseudonym(6), "clinical", "nurse",
        T0 - DAY, T0 - DAY, T0 - DAY,
    )  # fmt: skip
    insert_alerts(
        chdb_client,
        followup(p, 1, NO_FIRST_LOGIN, T0 - 2 * DAY),
        followup(p, 2, NO_FIRST_LOGIN, T0 - timedelta(days=2.3)),
        followup(p, 3, DORMANT, T0 - 10 * DAY),
        followup(p, 4, APP_NOT_INSTALLED, T0 - timedelta(days=2, hours=23, minutes=59)),
        resolved,
        resolved.resolve(T0 - DAY),
        sla,
        followup(practice_id(), 8, DORMANT, T0 - 20 * DAY),  # another practice
    )
    return p


def test_open_followups_only_most_overdue_first(chdb_client: Client, practice: str) -> None:
    rows = fetch_followups(chdb_client, practice, now=T0)
    assert [(r["alert_id"], r["days_overdue"]) for r in rows] == [
        (f"{DORMANT}-3", 10.0),
        (f"{APP_NOT_INSTALLED}-4", 2.9),  # rounded down, not to nearest
        (f"{NO_FIRST_LOGIN}-2", 2.3),  # exact tenths stay exact
        (f"{NO_FIRST_LOGIN}-1", 2.0),
    ]
    assert set(rows[0]) == {*ALERT_FIELDS, "days_overdue"}
    assert rows[0]["due_at"] == "2025-12-26T09:00:00.000Z"
    assert rows[0]["resolved_at"] is None


def test_default_now_is_the_practices_latest_event(chdb_client: Client, practice: str) -> None:
    insert_event(chdb_client, practice, T0 + timedelta(hours=12))
    insert_event(chdb_client, practice_id(), T0 + 400 * DAY)  # another practice's clock
    assert data_clock(chdb_client, practice) == T0 + timedelta(hours=12)
    rows = fetch_followups(chdb_client, practice)
    assert rows[0]["days_overdue"] == 10.5


def test_default_now_covers_alerts_raised_after_the_last_event(chdb_client: Client) -> None:
    p = practice_id()
    insert_event(chdb_client, p, T0)
    insert_alerts(chdb_client, followup(p, 1, INVITE_NOT_ACTIVATED, T0 + 2 * DAY))  # --until
    assert data_clock(chdb_client, p) == T0 + 2 * DAY
    assert fetch_followups(chdb_client, p)[0]["days_overdue"] == 0.0


def test_default_now_without_data_is_the_wall_clock(chdb_client: Client) -> None:
    before = datetime.now(UTC)
    clock = data_clock(chdb_client, practice_id())
    assert before <= clock <= datetime.now(UTC)


def test_naive_now_is_refused(chdb_client: Client, practice: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fetch_followups(chdb_client, practice, now=datetime(2026, 1, 5, 9, 0))


def test_table_groups_by_kind_with_counts(chdb_client: Client, practice: str) -> None:
    text = followups_command(chdb_client, practice, "table", now=T0)
    lines = text.splitlines()
    assert lines[0] == "open follow-ups as of 2026-01-05T09:00:00.000Z"
    headings = [ln for ln in lines if ln.startswith("enrollment.")]
    assert headings == [
        f"{NO_FIRST_LOGIN} (2 open)",
        f"{APP_NOT_INSTALLED} (1 open)",
        f"{DORMANT} (1 open)",
    ]
    section = lines[lines.index(headings[0]) + 1 : lines.index(headings[1])]
    assert section[0].split() == ["patient_pseudonym", "due_at", "days_overdue", "staff_pool"]
    assert [ln.split()[2] for ln in section[1:] if ln.strip()] == ["2.3", "2.0"]


def test_table_without_followups(chdb_client: Client) -> None:
    text = followups_command(chdb_client, practice_id(), "table", now=T0)
    assert text.splitlines()[-1] == "no open follow-ups"


def test_json_is_the_spec_fields_plus_days_overdue(chdb_client: Client, practice: str) -> None:
    data = json.loads(followups_command(chdb_client, practice, "json", now=T0))
    assert len(data) == 4
    assert list(data[0]) == [*ALERT_FIELDS, "days_overdue"]
    assert data[0]["kind"] == DORMANT and data[0]["days_overdue"] == 10.0
    assert data[0]["category"] is None and data[0]["staff_pool"] == "front_desk"


def test_csv_has_a_header_and_a_row_per_followup(chdb_client: Client, practice: str) -> None:
    text = followups_command(chdb_client, practice, "csv", now=T0)
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == [*ALERT_FIELDS, "days_overdue"]
    rows = list(reader)
    assert [r["days_overdue"] for r in rows] == ["10.0", "2.9", "2.3", "2.0"]
    assert rows[0]["resolved_at"] == "" and rows[0]["patient_pseudonym"] == pseudonym(3)


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        format_followups([], "xml")
