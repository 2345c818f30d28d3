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
the new login. The only extra state is the patient's identity (``p``, ``s``: ``advance`` must build
alerts from the state alone) and the alerts raised but not yet resolved (``o``: code →
``[start, due]`` ISO), frozen at raise time so the resolution repeats the same id and due time even
if thresholds or late events move things afterwards.

Alerts route to the front desk: the article has the front desk run the enrollment checklist and its
follow-ups. A threshold of zero or less disables that follow-up for the practice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.domain.enrollment import (
    ENROLLMENT_EVENT_TYPES,
    Enrollment,
    from_iso,
    read_enrollment,
    to_iso,
    write_enrollment,
)
from portal_pulse.domain.machine import State
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
    "estimate_state_bytes",
    "followup_alert_id",
    "state_bytes",
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
FOLLOWUP_KINDS: tuple[str, ...] = tuple(kind for kind, _ in _KINDS.values())

#: The article's enrollment checklist (and its reminders) is run by the front desk.
FOLLOWUP_STAFF_POOL = "front_desk"

_PRACTICE = "p"
_PSEUDONYM = "s"
_OPEN = "o"


def followup_alert_id(kind: str, practice_id: str, pseudonym: str, episode_start: datetime) -> str:
    """Deterministic id (SPEC §8): same kind, patient and episode → same id in worker and replay."""
    raw = f"{kind}|{practice_id}|{pseudonym}|{to_iso(episode_start)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _episode_start(code: str, e: Enrollment) -> datetime | None:
    """When the code's condition currently holds, the instant its episode started; else None."""
    if code == "i":
        return e.invited_at if not e.is_enrolled else None
    if code == "f":
        return e.enrolled_at if not e.has_logged_in else None
    if code == "a":
        return e.enrolled_at if not e.has_app else None
    return e.last_login_at  # "d": every login (re)starts a dormancy period


def _has_ended(code: str, e: Enrollment, start: datetime) -> bool:
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

    def __init__(self, thresholds_for: Callable[[str], StaleThresholds]) -> None:
        self._thresholds_for = thresholds_for

    def key_for(self, event: CleanEvent) -> str | None:
        if event.event_type not in ENROLLMENT_EVENT_TYPES:
            return None
        return f"{event.practice_id}|{event.patient_pseudonym}"

    def apply(self, state: State | None, event: CleanEvent, out: Outputs) -> State | None:
        """Fold the event; resolve, at the event's time, each raised alert whose condition ended."""
        if event.event_type not in ENROLLMENT_EVENT_TYPES:
            return state
        base: State = state or {
            _PRACTICE: event.practice_id,
            _PSEUDONYM: event.patient_pseudonym,
        }
        after = read_enrollment(base).with_event(event)
        opened: dict[str, list[str]] = dict(base.get(_OPEN) or {})
        for code in _KINDS:
            if code not in opened:
                continue
            start_iso, due_iso = opened[code]
            start = from_iso(start_iso)
            if _has_ended(code, after, start):
                alert = self._alert(base, code, start, from_iso(due_iso))
                out.alert(alert.resolve(event.occurred_at.astimezone(UTC)))
                del opened[code]
        return self._with_open(write_enrollment(base, after), opened)

    def advance(self, state: State, now: datetime, out: Outputs) -> State | None:
        """Raise every follow-up whose due instant is strictly before ``now``, earliest first."""
        opened: dict[str, list[str]] = dict(state.get(_OPEN) or {})
        due_now = sorted(
            (due, list(_KINDS).index(code), code, start)
            for code, start, due in self._pending(state)
            if due < now
        )
        if not due_now:
            return state
        for due, _, code, start in due_now:
            out.alert(self._alert(state, code, start, due))
            opened[code] = [to_iso(start), to_iso(due)]
        return self._with_open(state, opened)

    def next_due(self, state: State) -> datetime | None:
        return min((due for _, _, due in self._pending(state)), default=None)

    def _pending(self, state: Mapping[str, Any]) -> list[tuple[str, datetime, datetime]]:
        """(code, episode start, due) for every condition that holds and has not been raised."""
        record = read_enrollment(state)
        opened = state.get(_OPEN) or {}
        thresholds = self._thresholds_for(state[_PRACTICE])
        out: list[tuple[str, datetime, datetime]] = []
        for code, (_, field) in _KINDS.items():
            if code in opened:
                continue
            days: int = getattr(thresholds, field)
            start = _episode_start(code, record)
            if start is None or days <= 0:
                continue
            out.append((code, start, start + timedelta(days=days)))
        return out

    def _alert(self, state: Mapping[str, Any], code: str, start: datetime, due: datetime) -> Alert:
        kind = _KINDS[code][0]
        practice_id, pseudonym = state[_PRACTICE], state[_PSEUDONYM]
        return Alert(
            alert_id=followup_alert_id(kind, practice_id, pseudonym, start),
            kind=kind,
            practice_id=practice_id,
            subject_id=pseudonym,
            patient_pseudonym=pseudonym,
            category=None,
            staff_pool=FOLLOWUP_STAFF_POOL,
            due_at=due,
            raised_at=due,
            updated_at=due,
        )

    @staticmethod
    def _with_open(state: Mapping[str, Any], opened: dict[str, list[str]]) -> State:
        new = {k: v for k, v in state.items() if k != _OPEN}
        if opened:
            new[_OPEN] = opened
        return new


def state_bytes(state: Mapping[str, Any]) -> int:
    """Size of a state as compact UTF-8 JSON, the form a JSON-codec table store keeps."""
    return len(json.dumps(state, separators=(",", ":")).encode())


def estimate_state_bytes() -> int:
    """Bytes of a typical tracked patient: invited, enrolled, logged in on the web, no app yet.

    The app_not_installed alert is open, as for most users (the article's install rate is 34 %).
    """
    t0 = datetime(2026, 1, 5, 14, 3, 27, tzinfo=UTC)
    state: State = {
        _PRACTICE: "practice-0042",
        _PSEUDONYM: "0123456789abcdef0123456789abcdef",
    }
    record = Enrollment(
        enrolled_at=t0 + timedelta(days=2),
        first_login_at=t0 + timedelta(days=3),
        app_installed_at=None,
        last_login_at=t0 + timedelta(days=40),
    )
    start = t0 + timedelta(days=2)
    opened = {"a": [to_iso(start), to_iso(start + timedelta(days=14))]}
    return state_bytes({**write_enrollment(state, record), _OPEN: opened})
