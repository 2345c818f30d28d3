"""The alert record (SPEC §8) is defined once, in portal_pulse.domain.records; everything that
carries it — the Avro schema on the alerts topic, the ClickHouse table, the CLI and the webhook —
holds exactly those fields."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

from portal_pulse.domain.records import ALERT_FIELDS, Alert
from portal_pulse.notify.webhook import alert_payload
from portal_pulse.reports import alerts as alerts_report
from sinks.rows import ALERT_COLUMNS

ROOT = Path(__file__).resolve().parents[3]
VERSIONING = {"raised_at", "updated_at"}  # when the version was made; not a §8 field


def test_the_dataclass_holds_the_spec_fields_and_the_version_instants() -> None:
    assert {f.name for f in fields(Alert)} == {*ALERT_FIELDS, *VERSIONING}


def test_the_avro_schema_has_the_dataclass_fields() -> None:
    schema = json.loads((ROOT / "schemas" / "avro" / "portalpulse.Alert.avsc").read_text())
    assert [f["name"] for f in schema["fields"]] == [
        "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category",
        "staff_pool", "due_at", "resolved_at", "response_business_minutes", "raised_at",
        "updated_at",
    ]  # fmt: skip
    assert {f["name"] for f in schema["fields"]} == {f.name for f in fields(Alert)}


def test_the_clickhouse_columns_are_the_dataclass_fields_and_a_version() -> None:
    assert set(ALERT_COLUMNS) == {f.name for f in fields(Alert)} | {"version"}


def test_the_cli_and_the_webhook_show_exactly_the_spec_fields() -> None:
    assert alerts_report.ALERT_FIELDS is ALERT_FIELDS
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    alert = Alert("a", "sla.breached", "P1", "t", "ps", "clinical", "nurse", at, at, at)
    assert set(alert_payload(alert)) == {*ALERT_FIELDS, "event"}
