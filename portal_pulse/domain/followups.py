"""Enrollment follow-ups (SPEC §6): per-patient stale-enrollment alerts as a pure keyed machine.

Each follow-up is an *episode* with a start instant and a due instant ``start + N × 24 h``:

=====================================  ====  ===============================  ======================
kind                                   code  starts at                        ends (resolves) when
=====================================  ====  ===============================  ======================
``enrollment.invite_not_activated``    i     first pending invitation         enrolled (explicit or
                                                                              by a first login)
``enrollment.no_first_login``          f     enrollment                       any ``portal.login``
``enrollment.app_not_installed``       a     enrollment                       ``app.installed`` or a
                                                                              ``mobile_app`` login
``enrollment.dormant``                 d     latest ``portal.login``          a later login
=====================================  ====  ===============================  ======================

Conditions are derived from the enrollment record (``enrollment.py``), so they need no extra
state: once a condition has ended it cannot return, except dormancy, whose next episode starts at
the new login. The only extra state is the alerts raised but not yet resolved (``opened``: code →
(start, due)), frozen at raise time so the resolution repeats the same id and due time even if
thresholds or late events move things afterwards. The patient's identity is the key
(``practice|pseudonym``), so the stored state is the record and the open alerts alone, packed
as integers (``pack``: about 50 bytes for a typical patient).

Alerts route to the front desk: the article has the front desk run the enrollment checklist and its
follow-ups. A threshold of zero or less disables that follow-up for the practice.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from portal_pulse.domain.enrollment import ENROLLMENT_EVENT_TYPES, FIELDS, Enrollment, to_iso
from portal_pulse.domain.instants import DAY_US, from_us, to_us
from portal_pulse.domain.practices import StaleThresholds
from portal_pulse.domain.records import Alert, Outputs
from schemas.model import CleanEvent

__all__ = [
    "APP_NOT_INSTALLED",
    "DORMANT",
    "FOLLOWUP_KINDS",
    "FOLLOWUP_STAFF_POOL",
    "INVITE_NOT_ACTIVATED",
    "NO_FIRST_LOGIN",
    "FollowupMachine",
    "Followups",
    "estimate_state_bytes",
    "followup_alert_id",
    "pack",
    "state_bytes",
    "unpack",
]

INVITE_NOT_ACTIVATED = "enrollment.invite_not_activated"
NO_FIRST_LOGIN = "enrollment.no_first_login"
APP_NOT_INSTALLED = "enrollment.app_not_installed"
DORMANT = "enrollment.dormant"

#: Code stored in state → (alert kind, StaleThresholds field). Order fixes the emission order.
_KINDS: dict[str, tuple[str, str]] = {
    "i": (INVITE_NOT_ACTIVATED, "invite_not_activated_days"),
    "f": (NO_FIRST_LOGIN, "no_first_login_days"),
    "a": (APP_NOT_INSTALLED, "app_not_installed_days"),
    "d": (DORMANT, "dormant_days"),
}
_CODES = tuple(_KINDS)
_ORDER = {code: n for n, code in enumerate(_CODES)}
FOLLOWUP_KINDS: tuple[str, ...] = tuple(kind for kind, _ in _KINDS.values())

#: The article's enrollment checklist (and its reminders) is run by the front desk.
FOLLOWUP_STAFF_POOL = "front_desk"


@dataclass(frozen=True, slots=True)
class Followups:
    """One patient's follow-up state: identity (from the key), record, open alerts."""

    practice: str
    pseudonym: str
    record: Enrollment = field(default_factory=Enrollment)
    opened: dict[str, tuple[int, int]] = field(default_factory=dict)


# Packed form: a 16-bit mask (bits 0-4: which record fields are set, in FIELDS order; bits 5-8:
# which codes are open, in _CODES order), then one signed 64-bit integer per set field and two
# (start, due) per open code.
_MASK = struct.Struct("<H")
_INTS = [struct.Struct(f"<{n}q") for n in range(5 + 2 * len(_CODES) + 1)]
_FIELD_BITS = len(FIELDS)


def pack(state: Followups) -> bytes:
    """``state`` minus its identity, as ``_MASK`` + integers."""
    mask = 0
    values: list[int] = []
    record = state.record
    for bit, name in enumerate(FIELDS):
        value = getattr(record, name)
        if value is not None:
            mask |= 1 << bit
            values.append(value)
    opened = state.opened
    if opened:
        for bit, code in enumerate(_CODES, _FIELD_BITS):
            pair = opened.get(code)
            if pair is not None:
                mask |= 1 << bit
                values.extend(pair)
    return _MASK.pack(mask) + _INTS[len(values)].pack(*values)


def unpack(practice: str, pseudonym: str, data: bytes, start: int = 0) -> Followups:
    """``pack``'s bytes (from ``start``) back to the state of the given patient."""
    (mask,) = _MASK.unpack_from(data, start)
    count = (len(data) - start - _MASK.size) // 8
    values = iter(_INTS[count].unpack_from(data, start + _MASK.size))
    record = Enrollment(
        *(next(values) if mask & (1 << bit) else None for bit in range(_FIELD_BITS))
    )
    opened: dict[str, tuple[int, int]] = {}
    if mask >> _FIELD_BITS:
        for bit, code in enumerate(_CODES, _FIELD_BITS):
            if mask & (1 << bit):
                opened[code] = (next(values), next(values))
    return Followups(practice, pseudonym, record, opened)


def followup_alert_id(
    kind: str, practice_id: str, pseudonym: str, episode_start: datetime | int
) -> str:
    """Deterministic id (SPEC §8): same kind, patient and episode → same id in worker and replay."""
    raw = f"{kind}|{practice_id}|{pseudonym}|{to_iso(episode_start)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _episode_start(code: str, e: Enrollment) -> int | None:
    """When the code's condition currently holds, the instant its episode started; else None."""
    if code == "i":
        return e.invited_at if not e.is_enrolled else None
    if code == "f":
        return e.enrolled_at if not e.has_logged_in else None
    if code == "a":
        return e.enrolled_at if not e.has_app else None
    return e.last_login_at  # "d": every login (re)starts a dormancy period


def _has_ended(code: str, e: Enrollment, start: int) -> bool:
    """Whether the record now shows the condition of an episode raised at ``start`` is over."""
    if code == "i":
        return e.is_enrolled
    if code == "f":
        return e.has_logged_in
    if code == "a":
        return e.has_app
    return e.last_login_at is not None and e.last_login_at > start


class FollowupMachine:
    """SPEC §6 follow-ups for one patient per key ``"{practice_id}|{patient_pseudonym}"``."""

    name = "followups"
    event_types = ENROLLMENT_EVENT_TYPES

    def __init__(self, thresholds_for: Callable[[str], StaleThresholds]) -> None:
        self._thresholds_for = thresholds_for

    def key_for(self, event: CleanEvent) -> str | None:
        if event.event_type not in ENROLLMENT_EVENT_TYPES:
            return None
        return f"{event.practice_id}|{event.patient_pseudonym}"

    def dumps(self, state: Followups) -> bytes:
        return pack(state)

    def loads(self, key: str, data: bytes, start: int = 0) -> Followups:
        practice, _, pseudonym = key.rpartition("|")
        return unpack(practice, pseudonym, data, start)

    def apply(self, state: Followups | None, event: CleanEvent, out: Outputs) -> Followups | None:
        """Fold the event; resolve, at the event's time, each raised alert whose condition ended."""
        if event.event_type not in ENROLLMENT_EVENT_TYPES:
            return state
        if state is None:
            state = Followups(event.practice_id, event.patient_pseudonym)
        after = state.record.with_event(event)
        opened = state.opened
        if opened:
            opened = dict(opened)
            for code in _CODES:
                pair = opened.get(code)
                if pair is None:
                    continue
                start, due = pair
                if _has_ended(code, after, start):
                    alert = self._alert(state, code, start, due)
                    out.alert(alert.resolve(event.occurred_at.astimezone(UTC)))
                    del opened[code]
        return Followups(state.practice, state.pseudonym, after, opened)

    def advance(self, state: Followups, now: int, out: Outputs) -> Followups | None:
        """Raise every follow-up whose due instant is strictly before ``now``, earliest first."""
        due_now = sorted(
            (due, _ORDER[code], code, start)
            for code, start, due in self._pending(state)
            if due < now
        )
        if not due_now:
            return state
        opened = dict(state.opened)
        for due, _, code, start in due_now:
            out.alert(self._alert(state, code, start, due))
            opened[code] = (start, due)
        return Followups(state.practice, state.pseudonym, state.record, opened)

    def next_due(self, state: Followups) -> int | None:
        return min((due for _, _, due in self._pending(state)), default=None)

    def _pending(self, state: Followups) -> Iterator[tuple[str, int, int]]:
        """(code, episode start, due) for every condition that holds and has not been raised."""
        record = state.record
        opened = state.opened
        thresholds = self._thresholds_for(state.practice)
        for code, (_, threshold) in _KINDS.items():
            if code in opened:
                continue
            start = _episode_start(code, record)
            if start is None:
                continue
            days: int = getattr(thresholds, threshold)
            if days > 0:
                yield code, start, start + days * DAY_US

    def _alert(self, state: Followups, code: str, start: int, due: int) -> Alert:
        kind = _KINDS[code][0]
        practice_id, pseudonym = state.practice, state.pseudonym
        due_at = from_us(due)
        return Alert(
            alert_id=followup_alert_id(kind, practice_id, pseudonym, start),
            kind=kind,
            practice_id=practice_id,
            subject_id=pseudonym,
            patient_pseudonym=pseudonym,
            category=None,
            staff_pool=FOLLOWUP_STAFF_POOL,
            due_at=due_at,
            raised_at=due_at,
            updated_at=due_at,
        )


def state_bytes(state: Followups) -> int:
    """Bytes of a state as the host stores it (memory and changelog), header excluded."""
    return len(pack(state))


def estimate_state_bytes() -> int:
    """Bytes of a typical tracked patient: invited, enrolled, logged in on the web, no app yet.

    The app_not_installed alert is open, as for most users (the article's install rate is 34 %).
    """
    t0, day = to_us(datetime(2026, 1, 5, 14, 3, 27, tzinfo=UTC)), DAY_US
    record = Enrollment(
        enrolled_at=t0 + 2 * day,
        first_login_at=t0 + 3 * day,
        app_installed_at=None,
        last_login_at=t0 + 40 * day,
    )
    start = t0 + 2 * day
    opened = {"a": (start, start + 14 * day)}
    return state_bytes(Followups("practice-0042", "0" * 32, record, opened))
