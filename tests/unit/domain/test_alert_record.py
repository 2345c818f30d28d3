"""The alert record (SPEC §8) is defined once, in portal_pulse.domain.records; everything that
carries it — the Avro schema on the alerts topic, the ClickHouse table, the CLI and the webhook —
holds exactly those fields."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from portal_pulse.domain.records import ALERT_FIELDS, Alert, ResponseFact
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
        "updated_at", "withdrawn_at",
    ]  # fmt: skip
    assert {f["name"] for f in schema["fields"]} == {f.name for f in fields(Alert)}
    # Added after the first version, so it has a default and says when (schemas/serializer.py).
    (withdrawn,) = (f for f in schema["fields"] if f["name"] == "withdrawn_at")
    assert withdrawn["default"] is None and withdrawn["added_in"] == 2


def test_the_clickhouse_columns_are_the_dataclass_fields_and_a_version() -> None:
    assert set(ALERT_COLUMNS) == {f.name for f in fields(Alert)} | {"version"}


def test_withdrawn_at_is_the_last_spec_field() -> None:
    assert ALERT_FIELDS[-1] == "withdrawn_at"
    assert [f.name for f in fields(Alert)][-1] == "withdrawn_at"


def test_a_withdrawal_is_a_later_version_of_the_same_alert() -> None:
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    raised = Alert("a", "sla.breached", "P1", "t", "ps", "clinical", "nurse", at, at, at)
    assert raised.withdrawn_at is None
    later = raised.withdraw(at + timedelta(minutes=4))
    assert (later.withdrawn_at, later.updated_at) == (at + timedelta(minutes=4),) * 2
    assert replace(later, withdrawn_at=None, updated_at=at) == raised
    # withdrawn "before" the version it withdraws (a late event's instant): never goes back
    resolved = raised.resolve(at + timedelta(hours=1), 60.0)
    early = resolved.withdraw(at - timedelta(minutes=1))
    assert early.updated_at == resolved.updated_at
    assert early.withdrawn_at == at - timedelta(minutes=1)
    assert (early.resolved_at, early.response_business_minutes) == (resolved.resolved_at, 60.0)


def test_a_resolution_never_goes_back_before_the_version_it_resolves() -> None:
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    raised = Alert("a", "sla.breached", "P1", "t", "ps", "clinical", "nurse", at, at, at)
    assert raised.resolve(at - timedelta(minutes=5)).updated_at == at
    again = replace(raised, updated_at=at + timedelta(hours=2))  # raised again after a withdrawal
    assert again.resolve(at + timedelta(hours=1)).updated_at == at + timedelta(hours=2)
    assert again.resolve(at + timedelta(hours=3)).updated_at == at + timedelta(hours=3)


def test_a_response_fact_withdrawn_is_a_later_version_of_it() -> None:
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    fact = ResponseFact(
        "r", "P1", "t", "ps", "clinical", "nurse", "nurse", at, at, at + timedelta(hours=1), 1,
        60.0, 60.0, at, at, True, True,
    )  # fmt: skip
    assert (fact.withdrawn_at, fact.updated_at) == (None, None)
    assert fact.version_at == fact.replied_at
    gone = fact.withdraw(at + timedelta(hours=3))
    assert (gone.withdrawn_at, gone.updated_at) == (at + timedelta(hours=3),) * 2
    assert gone.version_at == at + timedelta(hours=3)
    assert fact.withdraw(at).updated_at == fact.replied_at  # never before the fact's own instant


def test_the_cli_and_the_webhook_show_exactly_the_spec_fields() -> None:
    assert alerts_report.ALERT_FIELDS is ALERT_FIELDS
    at = datetime(2026, 1, 5, 15, tzinfo=UTC)
    alert = Alert("a", "sla.breached", "P1", "t", "ps", "clinical", "nurse", at, at, at)
    assert set(alert_payload(alert)) == {*ALERT_FIELDS, "event"}
