"""Open follow-ups read from chDB: which alerts, days overdue against the data clock, formats,
kinds and limits, local due times, unknown practices, and matching the practice's roster."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.followups import (
    APP_NOT_INSTALLED,
    DORMANT,
    INVITE_NOT_ACTIVATED,
    NO_FIRST_LOGIN,
)
from portal_pulse.domain.records import Alert
from portal_pulse.errors import EXIT_NO_DATA, EXIT_USAGE, UserError
from portal_pulse.pseudonym import Pseudonymizer
from portal_pulse.reports.alerts import ALERT_FIELDS
from portal_pulse.reports.followups import (
    data_clock,
    fetch_followups,
    followups_command,
    format_followups,
    load_roster,
    parse_kinds,
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


FIELDS = [*ALERT_FIELDS, "days_overdue", "due_at_local"]


def test_open_followups_only_most_overdue_first(chdb_client: Client, practice: str) -> None:
    rows = fetch_followups(chdb_client, practice, now=T0)
    assert [(r["alert_id"], r["days_overdue"]) for r in rows] == [
        (f"{DORMANT}-3", 10.0),
        (f"{APP_NOT_INSTALLED}-4", 2.9),  # rounded down, not to nearest
        (f"{NO_FIRST_LOGIN}-2", 2.3),  # exact tenths stay exact
        (f"{NO_FIRST_LOGIN}-1", 2.0),
    ]
    assert set(rows[0]) == set(FIELDS)
    assert rows[0]["due_at"] == "2025-12-26T09:00:00.000Z"
    assert rows[0]["resolved_at"] is None
    assert rows[0]["due_at_local"] is None  # no zone asked for


def test_a_withdrawn_followup_leaves_the_worklist(chdb_client: Client, practice: str) -> None:
    """Later data shows follow-up 3 should not have fired (SPEC §7.1): it disappears; raised
    again later, it is back."""
    dormant = followup(practice, 3, DORMANT, T0 - 10 * DAY)
    withdrawn = dormant.withdraw(T0 - DAY)
    insert_alerts(chdb_client, withdrawn)
    ids = [r["alert_id"] for r in fetch_followups(chdb_client, practice, now=T0)]
    assert f"{DORMANT}-3" not in ids and len(ids) == 3
    text = followups_command(chdb_client, practice, "table", now=T0)
    assert pseudonym(3) not in text
    insert_alerts(chdb_client, replace(dormant, updated_at=withdrawn.updated_at + DAY / 24))
    ids = [r["alert_id"] for r in fetch_followups(chdb_client, practice, now=T0)]
    assert ids[0] == f"{DORMANT}-3" and len(ids) == 4


def test_due_times_in_the_practices_zone(chdb_client: Client, practice: str) -> None:
    rows = fetch_followups(chdb_client, practice, now=T0, timezone="America/Chicago")
    assert rows[0]["due_at_local"] == "2025-12-26T03:00:00-06:00"
    text = followups_command(chdb_client, practice, "table", now=T0, timezone="America/Chicago")
    lines = text.splitlines()
    assert (
        lines[0] == f"open follow-ups for {practice} as of 2026-01-05 03:00 CST (America/Chicago)"
    )
    assert "2025-12-26 03:00 CST" in lines[lines.index("") + 2]


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


def table_rows(text: str) -> list[list[str]]:
    """The table's rows below its header line, split on runs of blanks."""
    lines = text.splitlines()
    start = lines.index("") + 2
    return [ln.split() for ln in lines[start:]]


def test_table_is_one_list_most_overdue_first_with_counts(
    chdb_client: Client, practice: str
) -> None:
    text = followups_command(chdb_client, practice, "table", now=T0, timezone="UTC")
    lines = text.splitlines()
    assert lines[0] == f"open follow-ups for {practice} as of 2026-01-05 09:00 UTC (UTC)"
    assert lines[1] == "4 open: 2 no_first_login, 1 app_not_installed, 1 dormant"
    header = lines[lines.index("") + 1]
    assert header.split() == ["days_overdue", "kind", "due", "patient_pseudonym"]
    rows = table_rows(text)
    assert [(r[0], r[1]) for r in rows] == [
        ("10.0", "dormant"),
        ("2.9", "app_not_installed"),
        ("2.3", "no_first_login"),
        ("2.0", "no_first_login"),
    ]
    assert rows[0][2:5] == ["2025-12-26", "09:00", "UTC"] and rows[0][5] == pseudonym(3)


def test_kind_and_limit(chdb_client: Client, practice: str) -> None:
    only = followups_command(
        chdb_client, practice, "json", now=T0, kinds=parse_kinds(["no_first_login"])
    )
    assert [r["alert_id"] for r in json.loads(only)] == [
        f"{NO_FIRST_LOGIN}-2",
        f"{NO_FIRST_LOGIN}-1",
    ]
    two = followups_command(
        chdb_client, practice, "table", now=T0, timezone="UTC",
        kinds=parse_kinds(["dormant,enrollment.no_first_login"]), limit=2,
    )  # fmt: skip
    assert "3 open: 2 no_first_login, 1 dormant" in two
    assert "showing the 2 most overdue" in two
    assert [r[0] for r in table_rows(two)] == ["10.0", "2.3"]
    top = json.loads(followups_command(chdb_client, practice, "json", now=T0, limit=1))
    assert [r["alert_id"] for r in top] == [f"{DORMANT}-3"]
    none = followups_command(chdb_client, practice, "table", now=T0, kinds=(INVITE_NOT_ACTIVATED,))
    assert none.splitlines()[-1] == "no open follow-ups"
    with pytest.raises(UserError, match="at least 1"):
        followups_command(chdb_client, practice, "json", now=T0, limit=0)


def test_parse_kinds_accepts_short_and_full_names_in_spec_order() -> None:
    assert parse_kinds(None) == ()
    assert parse_kinds(["dormant", "enrollment.invite_not_activated"]) == (
        INVITE_NOT_ACTIVATED,
        DORMANT,
    )
    assert parse_kinds(["App_Not_Installed, no_first_login"]) == (NO_FIRST_LOGIN, APP_NOT_INSTALLED)


@pytest.mark.parametrize("bad", ["app", "sla.breached", "enrollment.", "dormant,nope"])
def test_an_unknown_kind_says_which_kinds_exist(bad: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_kinds([bad])
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE and "unknown follow-up kind" in message
    assert "invite_not_activated, no_first_login, app_not_installed, dormant" in message


def test_table_without_open_followups(chdb_client: Client) -> None:
    p = practice_id()
    insert_event(chdb_client, p, T0)
    text = followups_command(chdb_client, p, "table", now=T0)
    assert text.splitlines()[-1] == "no open follow-ups"


def test_an_unknown_practice_is_a_no_data_error(chdb_client: Client, practice: str) -> None:
    with pytest.raises(UserError) as caught:
        followups_command(chdb_client, "no-such-practice", "table", now=T0)
    assert caught.value.exit_code == EXIT_NO_DATA
    message = str(caught.value)
    assert message.startswith("no data for practice 'no-such-practice' (practices with data: ")
    assert "\n" not in message


def test_json_is_the_spec_fields_plus_days_overdue(chdb_client: Client, practice: str) -> None:
    data = json.loads(followups_command(chdb_client, practice, "json", now=T0, timezone="UTC"))
    assert len(data) == 4
    assert list(data[0]) == FIELDS
    assert data[0]["kind"] == DORMANT and data[0]["days_overdue"] == 10.0
    assert data[0]["category"] is None and data[0]["staff_pool"] == "front_desk"
    assert data[0]["due_at_local"] == "2025-12-26T09:00:00+00:00"
    assert "patient_id" not in data[0]  # only with a roster


def test_csv_has_a_header_and_a_row_per_followup(chdb_client: Client, practice: str) -> None:
    text = followups_command(chdb_client, practice, "csv", now=T0)
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == FIELDS
    rows = list(reader)
    assert [r["days_overdue"] for r in rows] == ["10.0", "2.9", "2.3", "2.0"]
    assert rows[0]["resolved_at"] == "" and rows[0]["patient_pseudonym"] == pseudonym(3)


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        format_followups([], "xml")


# -- the roster ------------------------------------------------------------------------------------

KEY = b"unit-test-key-not-a-secret-32-bytes"
PSEUDONYMIZE = Pseudonymizer(KEY)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture
def roster_practice(chdb_client: Client) -> str:
    """Follow-ups for patients whose pseudonyms the pipeline's key gives for MRN-1..MRN-3."""
    p = practice_id()
    alerts = []
    for n, (mrn, kind, days) in enumerate(
        [("MRN-1", NO_FIRST_LOGIN, 5), ("MRN-2", DORMANT, 9), ("MRN-3", APP_NOT_INSTALLED, 1)]
    ):
        pseudo = PSEUDONYMIZE(p, mrn)
        alert = followup(p, n, kind, T0 - days * DAY)
        alerts.append(replace(alert, subject_id=pseudo, patient_pseudonym=pseudo))
    alerts.append(followup(p, 7, NO_FIRST_LOGIN, T0 - 3 * DAY))  # a patient not on the roster
    insert_alerts(chdb_client, *alerts)
    return p


def test_the_roster_is_matched_with_the_ingest_pseudonym(tmp_path: Path) -> None:
    roster = load_roster(
        write(tmp_path / "r.csv", "patient_id,name,phone\nMRN-1,Ann Lee,555-0101\n"),
        "P001",
        PSEUDONYMIZE,
    )
    expected = hmac.new(KEY, b"P001:MRN-1", hashlib.sha256).hexdigest()[:32]  # SPEC §9
    assert roster.by_pseudonym == {
        expected: {"patient_id": "MRN-1", "name": "Ann Lee", "phone": "555-0101"}
    }
    assert roster.columns == ("name", "phone") and roster.patients == 1
    assert "MRN-1" not in repr(roster) and "Ann" not in repr(roster)


def test_roster_patients_appear_beside_their_followups(
    chdb_client: Client, roster_practice: str, tmp_path: Path
) -> None:
    p = roster_practice
    path = write(
        tmp_path / "roster.csv",
        "name,Patient ID,phone,kind\n"  # header spelling varies; "kind" clashes with a field
        "Ann Lee,MRN-1,555-0101,x\n"
        "Bo Diaz, MRN-2 ,555-0102,y\n"
        "Cy Ode,MRN-3,,z\n"
        "Di Yu,MRN-9,555-0109,w\n"  # no follow-up
        ",,,\n",
    )
    roster = load_roster(path, p, PSEUDONYMIZE)
    assert roster.columns == ("name", "phone", "roster_kind") and roster.patients == 4

    data = json.loads(followups_command(chdb_client, p, "json", now=T0, roster=roster))
    assert list(data[0]) == [*FIELDS, "patient_id", "name", "phone", "roster_kind"]
    by_id = {r["patient_id"]: r for r in data}
    assert by_id["MRN-2"]["kind"] == DORMANT and by_id["MRN-2"]["name"] == "Bo Diaz"
    assert by_id["MRN-2"]["patient_pseudonym"] == PSEUDONYMIZE(p, "MRN-2")
    assert by_id["MRN-1"]["phone"] == "555-0101" and by_id["MRN-1"]["roster_kind"] == "x"
    assert by_id["MRN-3"]["phone"] == ""
    assert by_id[None]["name"] is None and by_id[None]["patient_pseudonym"] == pseudonym(7)
    assert "MRN-9" not in by_id

    rows = list(csv.DictReader(io.StringIO(followups_command(
        chdb_client, p, "csv", now=T0, roster=roster
    ))))  # fmt: skip
    assert [(r["patient_id"], r["name"]) for r in rows] == [
        ("MRN-2", "Bo Diaz"), ("MRN-1", "Ann Lee"), ("", ""), ("MRN-3", "Cy Ode"),
    ]  # fmt: skip

    text = followups_command(chdb_client, p, "table", now=T0, roster=roster, timezone="UTC")
    lines = text.splitlines()
    assert lines[2] == "roster: 4 patients; 3 of the 4 follow-ups matched"
    header = lines[lines.index("") + 1].split()
    assert header == [
        "days_overdue", "kind", "due", "patient_id", "name", "phone", "roster_kind",
        "patient_pseudonym",
    ]  # fmt: skip
    first = lines[lines.index("") + 2]
    assert first.split()[:4] == ["9.0", "dormant", "2025-12-27", "09:00"]
    assert first.split()[5:9] == ["MRN-2", "Bo", "Diaz", "555-0102"]


def test_roster_delimiters_bom_and_repeated_ids(tmp_path: Path) -> None:
    semicolons = write(tmp_path / "s.csv", "\ufeffpatient_id;name\nMRN-1;Ann\nMRN-1;Again\n")
    roster = load_roster(semicolons, "P1", PSEUDONYMIZE)
    assert list(roster.by_pseudonym.values()) == [{"patient_id": "MRN-1", "name": "Ann"}]
    bom = write(tmp_path / "b.csv", "patient_id,name\nMRN-1,Ann\n", encoding="utf-8-sig")
    assert load_roster(bom, "P1", PSEUDONYMIZE).patients == 1
    short_rows = write(tmp_path / "short.csv", "patient_id,name,,\nMRN-1\n")
    roster = load_roster(short_rows, "P1", PSEUDONYMIZE)
    assert roster.columns == ("name", "column_3", "column_4")
    assert next(iter(roster.by_pseudonym.values()))["name"] == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        (
            "mrn,name\nMRN-1,Ann Lee\n",
            "has no patient_id column in its header row (found: mrn, name)",
        ),
        (b"patient_id,name\nMRN-1,Ren\xe9\n", "is not UTF-8"),
    ],
)
def test_bad_rosters_are_user_errors_that_show_no_patient_data(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "roster.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        load_roster(path, "P1", PSEUDONYMIZE)
    assert caught.value.exit_code == EXIT_USAGE
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "MRN-1" not in str(caught.value) and "Ann" not in str(caught.value)
