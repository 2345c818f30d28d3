"""Per-patient enrollment record (SPEC §4, §6), folded from portal events.

One record per patient is kept for about a million patients, so its instants are integers
(microseconds since the epoch, ``portal_pulse.domain.instants``) and the follow-up machine packs
it into a few bytes of state:

======================  ===============================================================
field                   meaning
======================  ===============================================================
``invited_at``          first *pending* invitation; cleared once the patient is enrolled
``enrolled_at``         earliest ``portal.enrolled`` or ``portal.login`` (SPEC §4: a first
                        login with no earlier enrollment implies enrollment)
``first_login_at``      earliest ``portal.login``
``app_installed_at``    earliest ``app.installed`` or ``portal.login`` on ``mobile_app``
``last_login_at``       latest ``portal.login``
======================  ===============================================================

Every fold takes minima/maxima rather than "latest wins", so slightly out-of-order events give the
same record as in-order ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from portal_pulse.domain.instants import iso_of_us, to_us
from schemas.model import CleanEvent

__all__ = [
    "ENROLLMENT_EVENT_TYPES",
    "FIELDS",
    "Enrollment",
    "from_iso",
    "to_iso",
]

#: The event types that change an enrollment record.
ENROLLMENT_EVENT_TYPES = frozenset(
    {"portal.invited", "portal.enrolled", "portal.login", "app.installed"}
)

#: The record's fields, in the order the follow-up state packs them.
FIELDS = ("invited_at", "enrolled_at", "first_login_at", "app_installed_at", "last_login_at")


def to_iso(at: datetime | int) -> str:
    """Canonical UTC ISO-8601 text of an instant (``datetime`` or integer), as alert ids use it."""
    if isinstance(at, int):
        return iso_of_us(at)
    if at.tzinfo is None:
        raise ValueError("naive datetime: instants must be timezone-aware")
    return at.astimezone(UTC).isoformat()


def from_iso(text: str) -> datetime:
    """Parse an ISO-8601 instant with an offset to an aware UTC datetime."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"naive instant in state: {text!r}")
    return at.astimezone(UTC)


def _min(current: int | None, at: int) -> int:
    return at if current is None or at < current else current


def _max(current: int | None, at: int) -> int:
    return at if current is None or at > current else current


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What the pipeline knows about one patient's portal enrollment; instants in microseconds
    since the epoch (``portal_pulse.domain.instants``)."""

    invited_at: int | None = None
    enrolled_at: int | None = None
    first_login_at: int | None = None
    app_installed_at: int | None = None
    last_login_at: int | None = None

    @property
    def is_enrolled(self) -> bool:
        return self.enrolled_at is not None

    @property
    def has_logged_in(self) -> bool:
        return self.last_login_at is not None

    @property
    def has_app(self) -> bool:
        return self.app_installed_at is not None

    def enrolled_by(self, at: int) -> bool:
        """SPEC §4 "enrolled at time t": enrollment (explicit or implied) at or before ``at``."""
        return self.enrolled_at is not None and self.enrolled_at <= at

    def with_event(self, event: CleanEvent) -> Enrollment:
        """Fold one event; types outside ``ENROLLMENT_EVENT_TYPES`` leave the record unchanged."""
        at = to_us(event.occurred_at)
        kind = event.event_type
        # Built field by field rather than with ``dataclasses.replace``, which costs three times
        # as much: once per enrollment event, logins above all. Order: invited, enrolled,
        # first login, app installed, last login.
        if kind == "portal.invited":
            # Once enrolled there is no pending invitation; a later invitation never moves an
            # earlier pending one, but a late-arriving earlier one does (it was the first).
            if self.is_enrolled:
                return self
            return Enrollment(
                _min(self.invited_at, at), self.enrolled_at, self.first_login_at,
                self.app_installed_at, self.last_login_at,
            )  # fmt: skip
        if kind == "portal.enrolled":
            return Enrollment(
                None, _min(self.enrolled_at, at), self.first_login_at, self.app_installed_at,
                self.last_login_at,
            )  # fmt: skip
        if kind == "portal.login":
            mobile = event.get("channel") == "mobile_app"
            return Enrollment(
                None,
                _min(self.enrolled_at, at),
                _min(self.first_login_at, at),
                _min(self.app_installed_at, at) if mobile else self.app_installed_at,
                _max(self.last_login_at, at),
            )
        if kind == "app.installed":
            return Enrollment(
                self.invited_at, self.enrolled_at, self.first_login_at,
                _min(self.app_installed_at, at), self.last_login_at,
            )  # fmt: skip
        return self
