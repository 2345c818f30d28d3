"""Per-patient enrollment record (SPEC §4, §6), folded from portal events into a small JSON dict.

One record per patient is kept for about a million patients, so the dict uses short keys, omits
absent facts and stores instants as UTC ISO-8601 strings:

==========  ======================  ===============================================================
dict key    field                   meaning
==========  ======================  ===============================================================
``inv``     ``invited_at``          first *pending* invitation; cleared once the patient is enrolled
``enr``     ``enrolled_at``         earliest ``portal.enrolled`` or ``portal.login`` (SPEC §4: a
                                    first login with no earlier enrollment implies enrollment)
``fl``      ``first_login_at``      earliest ``portal.login``
``app``     ``app_installed_at``    earliest ``app.installed`` or ``portal.login`` on ``mobile_app``
``ll``      ``last_login_at``       latest ``portal.login``
==========  ======================  ===============================================================

Every fold takes minima/maxima rather than "latest wins", so slightly out-of-order events give the
same record as in-order ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from schemas.model import CleanEvent

__all__ = [
    "ENROLLMENT_EVENT_TYPES",
    "Enrollment",
    "fold_event",
    "from_iso",
    "read_enrollment",
    "to_iso",
    "write_enrollment",
]

#: The event types that change an enrollment record.
ENROLLMENT_EVENT_TYPES = frozenset(
    {"portal.invited", "portal.enrolled", "portal.login", "app.installed"}
)

_KEYS: dict[str, str] = {
    "invited_at": "inv",
    "enrolled_at": "enr",
    "first_login_at": "fl",
    "app_installed_at": "app",
    "last_login_at": "ll",
}


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: instants must be timezone-aware")
    return at.astimezone(UTC)


def to_iso(at: datetime) -> str:
    """Canonical stored form: UTC ISO-8601, so equal instants give equal strings (and alert ids)."""
    return _utc(at).isoformat()


def from_iso(text: str) -> datetime:
    """Parse a stored instant back to an aware UTC datetime."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"naive instant in state: {text!r}")
    return at.astimezone(UTC)


def _min(current: datetime | None, at: datetime) -> datetime:
    return at if current is None or at < current else current


def _max(current: datetime | None, at: datetime) -> datetime:
    return at if current is None or at > current else current


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What the pipeline knows about one patient's portal enrollment; all instants aware UTC."""

    invited_at: datetime | None = None
    enrolled_at: datetime | None = None
    first_login_at: datetime | None = None
    app_installed_at: datetime | None = None
    last_login_at: datetime | None = None

    @property
    def is_enrolled(self) -> bool:
        return self.enrolled_at is not None

    @property
    def has_logged_in(self) -> bool:
        return self.last_login_at is not None

    @property
    def has_app(self) -> bool:
        return self.app_installed_at is not None

    def enrolled_by(self, at: datetime) -> bool:
        """SPEC §4 "enrolled at time t": enrollment (explicit or implied) at or before ``at``."""
        return self.enrolled_at is not None and self.enrolled_at <= at

    def with_event(self, event: CleanEvent) -> Enrollment:
        """Fold one event; types outside ``ENROLLMENT_EVENT_TYPES`` leave the record unchanged."""
        at = _utc(event.occurred_at)
        kind = event.event_type
        if kind == "portal.invited":
            # Once enrolled there is no pending invitation; a later invitation never moves an
            # earlier pending one, but a late-arriving earlier one does (it was the first).
            if self.is_enrolled:
                return self
            return replace(self, invited_at=_min(self.invited_at, at))
        if kind == "portal.enrolled":
            return replace(self, invited_at=None, enrolled_at=_min(self.enrolled_at, at))
        if kind == "portal.login":
            mobile = event.get("channel") == "mobile_app"
            return replace(
                self,
                invited_at=None,
                enrolled_at=_min(self.enrolled_at, at),
                first_login_at=_min(self.first_login_at, at),
                last_login_at=_max(self.last_login_at, at),
                app_installed_at=_min(self.app_installed_at, at)
                if mobile
                else self.app_installed_at,
            )
        if kind == "app.installed":
            return replace(self, app_installed_at=_min(self.app_installed_at, at))
        return self


def read_enrollment(state: Mapping[str, Any] | None) -> Enrollment:
    """The enrollment record held in a state dict (other keys in the dict are ignored)."""
    if not state:
        return Enrollment()
    values = {field: from_iso(state[key]) for field, key in _KEYS.items() if state.get(key)}
    return Enrollment(**values)


def write_enrollment(state: Mapping[str, Any] | None, enrollment: Enrollment) -> dict[str, Any]:
    """A new state dict: ``state``'s other keys plus the record, absent facts omitted."""
    out = {k: v for k, v in (state or {}).items() if k not in _KEYS.values()}
    for field, key in _KEYS.items():
        value = getattr(enrollment, field)
        if value is not None:
            out[key] = to_iso(value)
    return out


def fold_event(state: Mapping[str, Any] | None, event: CleanEvent) -> dict[str, Any]:
    """Read, fold one event and write back: the one-liner for hosts that keep only this record."""
    return write_enrollment(state, read_enrollment(state).with_event(event))
