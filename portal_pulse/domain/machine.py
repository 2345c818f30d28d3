"""The contract every keyed state machine (SLA per thread, follow-ups per patient) fulfils.

A machine is pure: given its JSON-able state for one key and an event (or the clock), it returns
the new state and reports outputs. The host (Faust agent or offline replay) owns storage, the
event-time clock and the deadline index, so the same machine runs in both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from portal_pulse.domain.records import Outputs
from schemas.model import CleanEvent

__all__ = ["KeyedMachine", "State"]

State = dict[str, Any]


class KeyedMachine(Protocol):
    name: str

    def key_for(self, event: CleanEvent) -> str | None:
        """The state key this event touches, or None when the machine ignores it."""

    def apply(self, state: State | None, event: CleanEvent, out: Outputs) -> State | None:
        """Fold the event into the key's state; None deletes the key."""

    def advance(self, state: State, now: datetime, out: Outputs) -> State | None:
        """Fire every deadline strictly before ``now``; None deletes the key."""

    def next_due(self, state: State) -> datetime | None:
        """The earliest deadline still to fire, for the host's index."""
