"""``alerts`` output: rounded numbers in the table, the same rows in json and csv, and CSV cells
that a spreadsheet would run as a formula neutralised with a leading quote."""

from __future__ import annotations

import csv
import io
import json

import pytest

from portal_pulse.reports.alerts import ALERT_FIELDS, csv_safe, format_alerts
from portal_pulse.reports.followups import Roster

ROWS = [
    dict(zip(ALERT_FIELDS, values, strict=True))
    for values in (
        ("a1", "sla.breached", "P001", "P001-T1", "ab12", "clinical", "nurse",
         "2026-01-08T18:54:12.000Z", "2026-01-08T21:54:38.000Z", 720.4333333333333, None),
        ("a2", "enrollment.dormant", "P001", "cd34", "cd34", None, "front_desk",
         "2026-01-09T10:00:00.000Z", None, None, None),
    )
]  # fmt: skip
WITHDRAWN = {**ROWS[0], "alert_id": "a3", "withdrawn_at": "2026-01-09T08:00:00.000Z"}


def test_table_rounds_floats_and_blanks_nulls() -> None:
    text = format_alerts(ROWS, "table")
    assert "720.43" in text and "720.433" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert format_alerts([], "table") == "no alerts\n"


def test_the_table_shows_withdrawn_at_only_when_a_row_is_withdrawn() -> None:
    assert "withdrawn_at" not in format_alerts(ROWS, "table")
    header, *lines = format_alerts([*ROWS, WITHDRAWN], "table").splitlines()
    assert header.split()[-1] == "withdrawn_at"
    assert lines[2].endswith("2026-01-09T08:00:00.000Z")
    assert lines[0].endswith("720.43")  # a standing alert's cell is blank


def test_csv_and_json_carry_withdrawn_at() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_alerts([*ROWS, WITHDRAWN], "csv"))))
    assert list(parsed[0])[-1] == "withdrawn_at"
    assert [r["withdrawn_at"] for r in parsed] == ["", "", "2026-01-09T08:00:00.000Z"]
    assert [r["withdrawn_at"] for r in json.loads(format_alerts([*ROWS, WITHDRAWN], "json"))] == [
        None,
        None,
        "2026-01-09T08:00:00.000Z",
    ]


def test_csv_and_json_carry_the_same_rows() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_alerts(ROWS, "csv"))))
    assert [r["alert_id"] for r in parsed] == ["a1", "a2"]
    assert parsed[1]["resolved_at"] == ""
    assert float(parsed[0]["response_business_minutes"]) == ROWS[0]["response_business_minutes"]
    assert json.loads(format_alerts(ROWS, "json")) == ROWS
    assert format_alerts([], "csv") == ",".join(ALERT_FIELDS) + "\n"


@pytest.mark.parametrize(
    "cell", ["=1+1", "+1", "-1+cmd", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://x")']
)
def test_csv_cells_a_spreadsheet_would_evaluate_are_quoted_as_text(cell: str) -> None:
    assert csv_safe(cell) == "'" + cell
    rows = [{**ROWS[1], "subject_id": cell, "staff_pool": cell}]
    parsed = list(csv.DictReader(io.StringIO(format_alerts(rows, "csv"), newline="")))
    assert parsed[0]["subject_id"] == parsed[0]["staff_pool"] == "'" + cell
    assert json.loads(format_alerts(rows, "json"))[0]["subject_id"] == cell  # JSON as it is


@pytest.mark.parametrize("value", ["P001", "a=b", "", "'quoted", 720.43, -5, None])
def test_other_csv_cells_stay_as_they_are(value: object) -> None:
    assert csv_safe(value) == value


def test_followups_csv_quotes_roster_cells_too() -> None:
    from portal_pulse.reports.followups import FOLLOWUP_FIELDS, format_followups

    row = dict.fromkeys(FOLLOWUP_FIELDS)
    row.update(kind="enrollment.dormant", patient_pseudonym="ab", days_overdue=1.5)
    row.update(
        due_at="2026-01-09T10:00:00.000Z", patient_id="=cmd|' /C calc'!A0", phone="+15551234"
    )
    roster = Roster(("phone",), {}, 0)
    parsed = list(csv.DictReader(io.StringIO(format_followups([row], "csv", roster=roster))))
    assert parsed[0]["patient_id"] == "'=cmd|' /C calc'!A0"
    assert parsed[0]["phone"] == "'+15551234"
    assert parsed[0]["days_overdue"] == "1.5"
