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
    "due_at", "resolved_at", "response_business_minutes", "withdrawn_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert version; a resolution repeats the alert_id with ``resolved_at`` set, a
    withdrawal (SPEC §7.1: later data shows it should not have fired) with ``withdrawn_at`` set.

    ``raised_at``/``updated_at`` are event-time instants derived from the rules (never from the
    wall clock), so the worker and the replay produce identical records. ``updated_at`` orders
    the versions of one alert (sinks/rows.py): a version issued after a withdrawal (the alert
    raised again) must carry a later ``updated_at`` than the withdrawal.
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
    withdrawn_at: datetime | None = None

    def resolve(self, at: datetime, business_minutes: float | None = None) -> Alert:
        # Never before this version's own instant (a raise's is raised_at; a raise issued again
        # after a withdrawal has a later one), so the resolution supersedes it.
        return replace(
            self,
            resolved_at=at,
            updated_at=max(at, self.updated_at, self.raised_at),
            response_business_minutes=business_minutes,
        )

    def withdraw(self, at: datetime) -> Alert:
        """This alert withdrawn at ``at``: a version that supersedes every earlier one."""
        return replace(self, withdrawn_at=at, updated_at=max(at, self.updated_at))

    def as_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies every value (a sixth of sending alerts).
        return {name: getattr(self, name) for name in _ALERT_FIELDS}


@dataclass(frozen=True, slots=True)
class ResponseFact:
    """One answered clock: a reply that answered one or more pending patient messages.

    A fact rewritten by late data (SPEC §7.1) is the same ``response_id`` again with later
    ``updated_at``; one that no longer exists is withdrawn (``withdrawn_at`` set) and counts in
    no metric. ``updated_at`` None means the fact's ``replied_at`` (facts first written).
    """

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
    withdrawn_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def version_at(self) -> datetime:
        """The instant that orders this fact's versions: ``updated_at``, else ``replied_at``."""
        return self.updated_at if self.updated_at is not None else self.replied_at

    def withdraw(self, at: datetime) -> ResponseFact:
        """This fact withdrawn at ``at``: a version that supersedes every earlier one."""
        return replace(self, withdrawn_at=at, updated_at=max(at, self.version_at))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RESPONSE_FIELDS}


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_RESPONSE_FIELDS = tuple(f.name for f in fields(ResponseFact))


class Outputs(Protocol):
    """Where processors put what they produce; the worker sends to Kafka, the replay to ClickHouse."""

    def alert(self, alert: Alert) -> None: ...

    def response(self, fact: ResponseFact) -> None: ...
