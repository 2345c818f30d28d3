"""``alerts`` output: rounded numbers in the table, the same rows in json and csv."""

from __future__ import annotations

import csv
import io
import json

from portal_pulse.reports.alerts import ALERT_FIELDS, format_alerts

ROWS = [
    dict(zip(ALERT_FIELDS, values, strict=True))
    for values in (
        ("a1", "sla.breached", "P001", "P001-T1", "ab12", "clinical", "nurse",
         "2026-01-08T18:54:12.000Z", "2026-01-08T21:54:38.000Z", 720.4333333333333),
        ("a2", "enrollment.dormant", "P001", "cd34", "cd34", None, "front_desk",
         "2026-01-09T10:00:00.000Z", None, None),
    )
]  # fmt: skip


def test_table_rounds_floats_and_blanks_nulls() -> None:
    text = format_alerts(ROWS, "table")
    assert "720.43" in text and "720.433" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert format_alerts([], "table") == "no alerts\n"


def test_csv_and_json_carry_the_same_rows() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_alerts(ROWS, "csv"))))
    assert [r["alert_id"] for r in parsed] == ["a1", "a2"]
    assert parsed[1]["resolved_at"] == ""
    assert float(parsed[0]["response_business_minutes"]) == ROWS[0]["response_business_minutes"]
    assert json.loads(format_alerts(ROWS, "json")) == ROWS
    assert format_alerts([], "csv") == ",".join(ALERT_FIELDS) + "\n"
