"""The message SLA state machine (SPEC §5), one state per practice thread.

A thread's clock starts at its first unanswered patient message (at the next opening when the
practice is closed); a staff reply answers every pending message, stops the clock and resolves
the alerts raised on it. Deadlines are computed once when the clock starts and stored in the
state, so alerts and resolutions depend only on the events, never on the wall clock.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.domain.machine import State
from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, Outputs, ResponseFact, route_staff_pool
from schemas.model import CleanEvent

__all__ = ["ALERT_KINDS", "AT_RISK", "BREACHED", "INTERNAL_MISSED", "SlaMachine"]

AT_RISK = "sla.at_risk"
INTERNAL_MISSED = "sla.internal_missed"
BREACHED = "sla.breached"
ALERT_KINDS = (AT_RISK, INTERNAL_MISSED, BREACHED)

SENT = "message.sent"
REPLIED = "message.replied"

MAX_PENDING_IDS = 100
"""Pending message ids tracked per clock; more messages still count but are not de-duplicated."""
ANSWERED_RETENTION = timedelta(days=7)
"""How long an answered thread's state is kept (bounds state: threads do not live forever)."""
MAX_ANSWERED_IDS = 20
"""Recently answered message ids kept after a reply, so a redelivered message starts no clock."""

# State layout (JSON): {"practice", "thread", "answered": [ids], "replied_at": ISO of the
# last answering reply (absent before one), "clock": None | {
#   "start", "first_at", "internal_due", "external_due", "at_risk": ISO instants (UTC),
#   "category", "patient", "pending": [[message_id, occurred_at ISO, category]],
#   "overflow": int, "fired": [kinds]}}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"event time must be timezone-aware, got {at!r}")
    return at.astimezone(UTC)


def alert_id(kind: str, practice_id: str, thread_id: str, clock_start: datetime) -> str:
    """Deterministic across worker and replay: kind, subject and clock (SPEC §8)."""
    raw = f"{kind}|{practice_id}|{thread_id}|{_iso(clock_start)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def response_id(practice_id: str, thread_id: str, clock_start: datetime) -> str:
    """Deterministic id of the response that stopped one clock."""
    raw = f"{practice_id}|{thread_id}|{_iso(clock_start)}"
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:32]


class SlaMachine:
    """Per-thread SLA clocks, alerts and response facts; implements ``KeyedMachine``."""

    name = "sla"

    def __init__(self, practices: Practices) -> None:
        self._practices = practices

    # -- KeyedMachine --------------------------------------------------------------------------

    def key_for(self, event: CleanEvent) -> str | None:
        if event.event_type not in (SENT, REPLIED):
            return None
        thread_id = event.get("thread_id")
        if not thread_id:
            return None
        return f"{event.practice_id}|{thread_id}"

    def apply(self, state: State | None, event: CleanEvent, out: Outputs) -> State | None:
        if self.key_for(event) is None:
            return state
        if state is None:
            state = {
                "practice": event.practice_id,
                "thread": str(event.get("thread_id")),
                "answered": [],
                "clock": None,
            }
        else:
            state = copy.deepcopy(state)
        if event.event_type == SENT:
            return self._on_message(state, event)
        return self._on_reply(state, event, out)

    def advance(self, state: State, now: datetime, out: Outputs) -> State | None:
        clock = state.get("clock")
        if not clock:
            # An answered thread is kept only to recognise redelivered messages, for a while.
            expires = self._expiry(state)
            return None if expires is not None and expires < _utc(now) else state
        now = _utc(now)
        due = [(at, kind) for kind, at in self._unfired(clock) if at < now]
        if not due:
            return state
        state = copy.deepcopy(state)
        clock = state["clock"]
        for at, kind in sorted(due, key=lambda item: (item[0], ALERT_KINDS.index(item[1]))):
            out.alert(self._alert(state, kind, at))
            clock["fired"].append(kind)
        return state

    def next_due(self, state: State) -> datetime | None:
        clock = state.get("clock")
        if not clock:
            return self._expiry(state)
        return min((at for _, at in self._unfired(clock)), default=None)

    @staticmethod
    def _expiry(state: State) -> datetime | None:
        replied = state.get("replied_at")
        return _instant(replied) + ANSWERED_RETENTION if replied else None

    # -- events --------------------------------------------------------------------------------

    def _on_message(self, state: State, event: CleanEvent) -> State:
        message_id = str(event.get("message_id"))
        occurred = _utc(event.occurred_at)
        category = str(event.get("category") or "other")
        if message_id in state["answered"]:
            return state
        last_reply = state.get("replied_at")
        if last_reply is not None and occurred <= _instant(last_reply):
            return state  # delivered late, but the last reply already answered it
        clock = state["clock"]
        if clock is None:
            self._start_clock(state, event.practice_id, [[message_id, _iso(occurred), category]])
            state["clock"]["patient"] = event.patient_pseudonym
            return state
        if any(entry[0] == message_id for entry in clock["pending"]):
            return state
        if len(clock["pending"]) >= MAX_PENDING_IDS:
            clock["overflow"] += 1
            return state
        clock["pending"].append([message_id, _iso(occurred), category])
        if occurred < _instant(clock["first_at"]) and not clock["fired"]:
            # A late-arriving earlier message: the clock really started then (no alert yet).
            patient = clock["patient"]
            overflow = clock["overflow"]
            self._start_clock(state, event.practice_id, clock["pending"])
            state["clock"].update(patient=patient, overflow=overflow)
        return state

    def _start_clock(self, state: State, practice_id: str, pending: list[list[str]]) -> None:
        """(Re)start the clock at the earliest of ``pending``, computing its deadlines once."""
        pending = sorted(pending, key=lambda entry: _instant(entry[1]))
        config = self._practices.for_practice(practice_id)
        calendar, sla = config.calendar, config.sla
        first_at = _instant(pending[0][1])
        start = calendar.clock_start(first_at)
        state["clock"] = {
            "start": _iso(start),
            "first_at": _iso(first_at),
            "internal_due": _iso(sla.internal_due(calendar, start)),
            "external_due": _iso(sla.external_due(calendar, start)),
            "at_risk": _iso(sla.at_risk_at(calendar, start)),
            "category": pending[0][2],
            "patient": "",
            "pending": pending,
            "overflow": 0,
            "fired": [],
        }

    def _on_reply(self, state: State, event: CleanEvent, out: Outputs) -> State | None:
        clock = state["clock"]
        if clock is None or event.get("automated"):
            return self._settle(state)
        replied = _utc(event.occurred_at)
        answered = [e for e in clock["pending"] if _instant(e[1]) <= replied]
        later = [e for e in clock["pending"] if _instant(e[1]) > replied]
        if not answered:
            return state  # the reply predates every pending message: it answers none of them
        # The host advances to the reply's time first; repeating it keeps apply self-sufficient.
        state = self.advance(state, replied, out) or state
        clock = state["clock"]

        config = self._practices.for_practice(state["practice"])
        start = _instant(clock["start"])
        first_at = min(_instant(e[1]) for e in answered)
        business = config.calendar.business_minutes_between(start, replied)
        internal_due = _instant(clock["internal_due"])
        external_due = _instant(clock["external_due"])
        out.response(
            ResponseFact(
                response_id=response_id(state["practice"], state["thread"], start),
                practice_id=state["practice"],
                thread_id=state["thread"],
                patient_pseudonym=clock["patient"],
                category=clock["category"],
                routed_pool=route_staff_pool(clock["category"]),
                replied_by_pool=str(event.get("staff_pool") or ""),
                first_message_at=first_at,
                clock_started_at=start,
                replied_at=replied,
                messages_answered=len(answered) + clock["overflow"],
                response_business_minutes=business,
                response_wall_minutes=(replied - first_at).total_seconds() / 60,
                internal_due_at=internal_due,
                external_due_at=external_due,
                met_internal_target=replied <= internal_due,
                met_external_promise=replied <= external_due,
            )
        )
        for kind in clock["fired"]:
            at = self._instants(clock)[kind]
            out.alert(self._alert(state, kind, at).resolve(replied, business))

        state["answered"] = (state["answered"] + [e[0] for e in answered])[-MAX_ANSWERED_IDS:]
        state["replied_at"] = _iso(replied)
        state["clock"] = None
        if later:
            # Messages stamped after this reply (delivered before it) open the next clock.
            self._start_clock(state, state["practice"], later)
            state["clock"]["patient"] = clock["patient"]
        return self._settle(state)

    @staticmethod
    def _settle(state: State) -> State | None:
        """Drop a state that holds nothing worth keeping."""
        if state["clock"] is None and not state["answered"]:
            return None
        return state

    # -- alerts --------------------------------------------------------------------------------

    @staticmethod
    def _instants(clock: dict[str, Any]) -> dict[str, datetime]:
        return {
            AT_RISK: _instant(clock["at_risk"]),
            INTERNAL_MISSED: _instant(clock["internal_due"]),
            BREACHED: _instant(clock["external_due"]),
        }

    def _unfired(self, clock: dict[str, Any]) -> list[tuple[str, datetime]]:
        fired = set(clock["fired"])
        return [(kind, at) for kind, at in self._instants(clock).items() if kind not in fired]

    @staticmethod
    def _alert(state: State, kind: str, at: datetime) -> Alert:
        clock = state["clock"]
        start = _instant(clock["start"])
        due = _instant(clock["external_due"] if kind == BREACHED else clock["internal_due"])
        return Alert(
            alert_id=alert_id(kind, state["practice"], state["thread"], start),
            kind=kind,
            practice_id=state["practice"],
            subject_id=state["thread"],
            patient_pseudonym=clock["patient"],
            category=clock["category"],
            staff_pool=route_staff_pool(clock["category"]),
            due_at=due,
            raised_at=at,
            updated_at=at,
        )
