"""Row shapes of the ClickHouse tables, from the records the pipeline carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.domain.live import LiveRow
from portal_pulse.domain.records import Alert, ResponseFact
from schemas.model import CleanEvent

__all__ = [
    "ALERT_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "EVENT_COLUMNS",
    "EVENT_SOURCE_COLUMNS",
    "RESPONSE_COLUMNS",
    "TABLES",
    "TableSpec",
    "alert_row",
    "dead_letter_row",
    "event_row",
    "response_row",
    "version_of",
]

_DETAIL_COLUMNS = (
    "encounter_id", "method", "channel", "platform", "thread_id", "message_id", "category",
    "staff_pool", "automated", "result_id", "appointment_id", "appointment_type", "payment_id",
    "amount_cents", "currency", "call_id", "direction", "reason", "refill_id", "survey_id", "score",
)  # fmt: skip
_NUMERIC = {"automated": 0, "amount_cents": 0, "score": 0}

EVENT_COLUMNS = (
    "event_id", "event_type", "occurred_at", "practice_id", "patient_pseudonym", *_DETAIL_COLUMNS,
)  # fmt: skip


# The raw record an ``events`` row was made from (the clean record's ``pp-src`` header): the
# sink role reads back the highest raw offset per clean partition and raw source at start, to
# recognise a second copy of a raw record exactly as the processors do (migration 0005).
EVENT_SOURCE_COLUMNS = ("raw_source", "raw_offset")


def event_row(event: CleanEvent) -> list[Any]:
    details = event.details
    row: list[Any] = [
        event.event_id,
        event.event_type,
        event.occurred_at,
        event.practice_id,
        event.patient_pseudonym,
    ]
    for name in _DETAIL_COLUMNS:
        value = details.get(name)
        if value is None:
            value = _NUMERIC.get(name, "")
        elif name == "automated":
            value = int(bool(value))
        row.append(value)
    return row


ALERT_COLUMNS = (
    "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category", "staff_pool",
    "due_at", "raised_at", "resolved_at", "response_business_minutes", "updated_at", "withdrawn_at",
    "version",
)  # fmt: skip


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _ms(at: datetime) -> int:
    """Milliseconds since the epoch, exactly as ClickHouse's ``toUnixTimestamp64Milli`` of the
    stored ``DateTime64(3)`` (integer arithmetic: a float product can land one below)."""
    return ((at if at.tzinfo else at.replace(tzinfo=UTC)) - _EPOCH) // _MS


def version_of(at: datetime, *, withdrawn: bool, resolved: bool = False) -> int:
    """The ``version`` of an alert or response fact row (ReplacingMergeTree keeps the highest):
    a later ``updated_at`` wins; at the same instant a withdrawal outranks a resolution, which
    outranks a raise. So a withdrawal always supersedes the version it withdraws (its
    ``updated_at`` is never earlier), and a version issued later (raised again) supersedes the
    withdrawal. Migration 0009 computes the same from the columns."""
    return _ms(at) * 4 + (2 if withdrawn else 0) + (1 if resolved else 0)


def alert_row(alert: Alert) -> list[Any]:
    version = version_of(
        alert.updated_at,
        withdrawn=alert.withdrawn_at is not None,
        resolved=alert.resolved_at is not None,
    )
    return [
        alert.alert_id,
        alert.kind,
        alert.practice_id,
        alert.subject_id,
        alert.patient_pseudonym,
        alert.category,
        alert.staff_pool,
        alert.due_at,
        alert.raised_at,
        alert.resolved_at,
        alert.response_business_minutes,
        alert.updated_at,
        alert.withdrawn_at,
        version,
    ]


_FACT_FIELDS = tuple(ResponseFact.__dataclass_fields__)
RESPONSE_COLUMNS = (*_FACT_FIELDS, "version")
"""The fact's fields (``updated_at`` stored as ``version_at``: never null) and its version."""


def response_row(fact: ResponseFact) -> list[Any]:
    row: list[Any] = [
        int(v) if isinstance(v, bool) else v for v in (getattr(fact, c) for c in _FACT_FIELDS)
    ]
    row[_FACT_FIELDS.index("updated_at")] = fact.version_at
    row.append(version_of(fact.version_at, withdrawn=fact.withdrawn_at is not None))
    return row


DEAD_LETTER_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "reason", "detail", "field", "event_id",
    "practice_id", "received_at",
)  # fmt: skip


def dead_letter_row(record: dict[str, Any]) -> list[Any]:
    """A DeadLetter record minus ``raw``: the raw bytes (PHI) stay in Kafka only."""
    return [
        record["source_topic"],
        record["source_partition"],
        record["source_offset"],
        record["reason"],
        record["detail"],
        record.get("field") or "",
        record.get("event_id") or "",
        record.get("practice_id") or "",
        record["received_at"],
    ]


LIVE_METRIC_COLUMNS = (
    "practice_id", "partition", "day",
    "logins", "active_patients", "patient_messages", "portal_bookings", "total_bookings", "inbound_calls",
    "logins_7d", "active_patients_7d", "patient_messages_7d", "portal_bookings_7d", "total_bookings_7d",
    "inbound_calls_7d", "open_provider", "open_nurse", "open_front_desk", "open_billing", "as_of", "version",
)  # fmt: skip
_LIVE_COUNTS = (
    "logins",
    "active_patients",
    "patient_messages",
    "portal_bookings",
    "total_bookings",
    "inbound_calls",
)


def live_row(row: LiveRow) -> list[Any]:
    return [
        row.practice_id,
        row.partition,
        row.day,
        *(row.today.get(k, 0) for k in _LIVE_COUNTS),
        *(row.trailing_7d.get(k, 0) for k in _LIVE_COUNTS),
        *(row.open_by_pool.get(p, 0) for p in ("provider", "nurse", "front_desk", "billing")),
        row.as_of,
        _ms(row.as_of),
    ]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A ClickHouse table the pipeline writes, its columns and the row maker of its record."""

    name: str
    columns: tuple[str, ...]
    row: Callable[[Any], list[Any]]


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec("events", EVENT_COLUMNS, event_row),
        TableSpec("dead_letters", DEAD_LETTER_COLUMNS, dead_letter_row),
        TableSpec("alerts", ALERT_COLUMNS, alert_row),
        TableSpec("message_responses", RESPONSE_COLUMNS, response_row),
        TableSpec("live_metrics", LIVE_METRIC_COLUMNS, live_row),
    )
}
