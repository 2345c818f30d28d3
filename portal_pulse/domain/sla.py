"""The message SLA state machine (SPEC §5), one state per practice thread.

A thread's clock starts at its first unanswered patient message (at the next opening when the
practice is closed); a staff reply answers every pending message, stops the clock and resolves
the alerts raised on it. Deadlines are computed once when the clock starts and stored in the
state, so alerts and resolutions depend only on the events, never on the wall clock.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from portal_pulse import json_text
from portal_pulse.domain.instants import DAY_US, from_us, to_us
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
ANSWERED_RETENTION = 7 * DAY_US
"""How long an answered thread's state is kept (bounds state: threads do not live forever)."""
MAX_ANSWERED_IDS = 20
"""Recently answered message ids kept after a reply, so a redelivered message starts no clock."""

# State layout (stored as compact JSON): {"practice", "thread", "answered": [ids],
# "replied_at": the last answering reply (absent before one), "clock": None | {
#   "start", "first_at", "internal_due", "external_due", "at_risk",
#   "category", "patient", "pending": [[message_id, occurred_at, category]],
#   "overflow": int, "fired": [kinds]}}
# Every instant is an integer, microseconds since the epoch (portal_pulse.domain.instants).


def _iso(at: datetime | int) -> str:
    return (from_us(at) if isinstance(at, int) else at.astimezone(UTC)).isoformat()


def _copy(state: State) -> State:
    """A copy ``apply``/``advance`` may change: the containers they change, copied one level."""
    new = dict(state)
    new["answered"] = list(state["answered"])
    clock = state["clock"]
    if clock:
        clock = new["clock"] = dict(clock)
        clock["pending"] = list(clock["pending"])
        clock["fired"] = list(clock["fired"])
    return new


def alert_id(kind: str, practice_id: str, thread_id: str, clock_start: datetime | int) -> str:
    """Deterministic across worker and replay: kind, subject and clock (SPEC §8)."""
    raw = f"{kind}|{practice_id}|{thread_id}|{_iso(clock_start)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def response_id(practice_id: str, thread_id: str, first_message_id: str) -> str:
    """Deterministic id of the response that stopped one clock: from the clock's first
    message, which only that clock has (two clocks of a thread can start at one opening)."""
    raw = f"{practice_id}|{thread_id}|{first_message_id}"
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:32]


class SlaMachine:
    """Per-thread SLA clocks, alerts and response facts; implements ``KeyedMachine``."""

    name = "sla"
    event_types = frozenset({SENT, REPLIED})

    def __init__(self, practices: Practices) -> None:
        self._practices = practices

    # -- storage -------------------------------------------------------------------------------

    def dumps(self, state: State) -> bytes:
        return json_text.compact_bytes(state)

    def loads(self, key: str, data: bytes, start: int = 0) -> State:
        return json_text.loads(data[start:])

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
            state = _copy(state)
        if event.event_type == SENT:
            return self._on_message(state, event)
        return self._on_reply(state, event, out)

    def advance(self, state: State, now: int, out: Outputs) -> State | None:
        clock = state.get("clock")
        if not clock:
            # An answered thread is kept only to recognise redelivered messages, for a while.
            expires = self._expiry(state)
            return None if expires is not None and expires < now else state
        due = [(at, kind) for kind, at in self._unfired(clock) if at < now]
        if not due:
            return state
        state = _copy(state)
        clock = state["clock"]
        for at, kind in sorted(due, key=lambda item: (item[0], ALERT_KINDS.index(item[1]))):
            out.alert(self._alert(state, kind, at))
            clock["fired"].append(kind)
        return state

    def next_due(self, state: State) -> int | None:
        clock = state.get("clock")
        if not clock:
            return self._expiry(state)
        return min((at for _, at in self._unfired(clock)), default=None)

    @staticmethod
    def _expiry(state: State) -> int | None:
        replied = state.get("replied_at")
        return replied + ANSWERED_RETENTION if replied is not None else None

    # -- events --------------------------------------------------------------------------------

    def _on_message(self, state: State, event: CleanEvent) -> State:
        message_id = str(event.get("message_id"))
        occurred = to_us(event.occurred_at)
        category = str(event.get("category") or "other")
        if message_id in state["answered"]:
            return state
        last_reply = state.get("replied_at")
        if last_reply is not None and occurred <= last_reply:
            return state  # delivered late, but the last reply already answered it
        clock = state["clock"]
        if clock is None:
            self._start_clock(state, event.practice_id, [[message_id, occurred, category]])
            state["clock"]["patient"] = event.patient_pseudonym
            return state
        if any(entry[0] == message_id for entry in clock["pending"]):
            return state
        if len(clock["pending"]) >= MAX_PENDING_IDS:
            clock["overflow"] += 1
            return state
        clock["pending"].append([message_id, occurred, category])
        if occurred < clock["first_at"] and not clock["fired"]:
            # A late-arriving earlier message: the clock really started then (no alert yet).
            patient = clock["patient"]
            overflow = clock["overflow"]
            self._start_clock(state, event.practice_id, clock["pending"])
            state["clock"].update(patient=patient, overflow=overflow)
        return state

    def _start_clock(self, state: State, practice_id: str, pending: list[list[Any]]) -> None:
        """(Re)start the clock at the earliest of ``pending``, computing its deadlines once."""
        pending = sorted(pending, key=lambda entry: entry[1])
        config = self._practices.for_practice(practice_id)
        calendar, sla = config.calendar, config.sla
        first_at = pending[0][1]
        start = calendar.clock_start(from_us(first_at))
        state["clock"] = {
            "start": to_us(start),
            "first_at": first_at,
            "internal_due": to_us(sla.internal_due(calendar, start)),
            "external_due": to_us(sla.external_due(calendar, start)),
            "at_risk": to_us(sla.at_risk_at(calendar, start)),
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
        replied = to_us(event.occurred_at)
        replied_at = from_us(replied)
        answered = [e for e in clock["pending"] if e[1] <= replied]
        later = [e for e in clock["pending"] if e[1] > replied]
        if not answered:
            return state  # the reply predates every pending message: it answers none of them
        # The host advances to the reply's time first; repeating it keeps apply self-sufficient.
        state = self.advance(state, replied, out) or state
        clock = state["clock"]

        config = self._practices.for_practice(state["practice"])
        start_us = clock["start"]
        start = from_us(start_us)
        first_us = min(e[1] for e in answered)
        first_at = from_us(first_us)
        business = config.calendar.business_minutes_between(start, replied_at)
        internal_due = from_us(clock["internal_due"])
        external_due = from_us(clock["external_due"])
        out.response(
            ResponseFact(
                response_id=response_id(
                    state["practice"], state["thread"], str(clock["pending"][0][0])
                ),
                practice_id=state["practice"],
                thread_id=state["thread"],
                patient_pseudonym=clock["patient"],
                category=clock["category"],
                routed_pool=route_staff_pool(clock["category"]),
                replied_by_pool=str(event.get("staff_pool") or ""),
                first_message_at=first_at,
                clock_started_at=start,
                replied_at=replied_at,
                messages_answered=len(answered) + clock["overflow"],
                response_business_minutes=business,
                response_wall_minutes=(replied_at - first_at).total_seconds() / 60,
                internal_due_at=internal_due,
                external_due_at=external_due,
                met_internal_target=replied <= clock["internal_due"],
                met_external_promise=replied <= clock["external_due"],
            )
        )
        for kind in clock["fired"]:
            at = self._instants(clock)[kind]
            out.alert(self._alert(state, kind, at).resolve(replied_at, business))

        state["answered"] = (state["answered"] + [e[0] for e in answered])[-MAX_ANSWERED_IDS:]
        state["replied_at"] = replied
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
    def _instants(clock: dict[str, Any]) -> dict[str, int]:
        return {
            AT_RISK: clock["at_risk"],
            INTERNAL_MISSED: clock["internal_due"],
            BREACHED: clock["external_due"],
        }

    def _unfired(self, clock: dict[str, Any]) -> list[tuple[str, int]]:
        fired = clock["fired"]
        return [(kind, at) for kind, at in self._instants(clock).items() if kind not in fired]

    @staticmethod
    def _alert(state: State, kind: str, at_us: int) -> Alert:
        clock = state["clock"]
        due = from_us(clock["external_due"] if kind == BREACHED else clock["internal_due"])
        at = from_us(at_us)
        return Alert(
            alert_id=alert_id(kind, state["practice"], state["thread"], clock["start"]),
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
