"""What the stateful processors emit: alerts (SPEC §8) and message response facts."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Protocol

__all__ = ["ALERT_FIELDS", "Alert", "Outputs", "ResponseFact", "route_staff_pool"]

_ROUTES = {
    "clinical": "nurse",
    "administrative": "front_desk",
    "billing": "billing",
    "other": "front_desk",
}


def route_staff_pool(category: str) -> str:
    """SPEC §5 triage: which staff pool a message category routes to."""
    return _ROUTES.get(category, "front_desk")


# SPEC §8: the fields of an alert as users see it, in this order: the CLI's columns, the
# webhook's body. The Avro schema and the ClickHouse table hold these and the version
# instants (raised_at, updated_at); tests/unit/domain/test_alert_record.py keeps them in step.
ALERT_FIELDS = (
    "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category", "staff_pool",
    "due_at", "resolved_at", "response_business_minutes",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert version; a resolution repeats the alert_id with ``resolved_at`` set.

    ``raised_at``/``updated_at`` are event-time instants derived from the rules (never from the
    wall clock), so the worker and the replay produce identical records.
    """

    alert_id: str
    kind: str
    practice_id: str
    subject_id: str
    patient_pseudonym: str
    category: str | None
    staff_pool: str | None
    due_at: datetime
    raised_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    response_business_minutes: float | None = None

    def resolve(self, at: datetime, business_minutes: float | None = None) -> Alert:
        return replace(
            self,
            resolved_at=at,
            updated_at=max(at, self.raised_at),
            response_business_minutes=business_minutes,
        )

    def as_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies every value (a sixth of sending alerts).
        return {name: getattr(self, name) for name in _ALERT_FIELDS}


@dataclass(frozen=True, slots=True)
class ResponseFact:
    """One answered clock: a reply that answered one or more pending patient messages."""

    response_id: str
    practice_id: str
    thread_id: str
    patient_pseudonym: str
    category: str
    routed_pool: str
    replied_by_pool: str
    first_message_at: datetime
    clock_started_at: datetime
    replied_at: datetime
    messages_answered: int
    response_business_minutes: float
    response_wall_minutes: float
    internal_due_at: datetime
    external_due_at: datetime
    met_internal_target: bool
    met_external_promise: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RESPONSE_FIELDS}


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_RESPONSE_FIELDS = tuple(f.name for f in fields(ResponseFact))


class Outputs(Protocol):
    """Where processors put what they produce; the worker sends to Kafka, the replay to ClickHouse."""

    def alert(self, alert: Alert) -> None: ...

    def response(self, fact: ResponseFact) -> None: ...
