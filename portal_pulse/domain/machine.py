"""The contract every keyed state machine (SLA per thread, follow-ups per patient) fulfils.

A machine is pure: given its state for one key and an event (or the clock), it returns the new
state and reports outputs. The host (Faust agent or offline replay) owns storage, the event-time
clock and the deadline index, so the same machine runs in both. The host keeps each state as the
bytes ``dumps`` makes (in memory and in the changelog) and hands the machine ``loads(key, ...)``
of them: how compact a state is, is the machine's business. Instants are integers, microseconds
since the epoch (``portal_pulse.domain.instants``).
"""

from __future__ import annotations

from typing import Any, Protocol

from portal_pulse.domain.records import Outputs
from schemas.model import CleanEvent

__all__ = ["KeyedMachine", "State"]

State = Any


class KeyedMachine(Protocol):
    name: str
    #: The event types ``key_for`` can return a key for: the host skips the machine for others.
    event_types: frozenset[str]

    def key_for(self, event: CleanEvent) -> str | None:
        """The state key this event touches, or None when the machine ignores it."""

    def apply(self, state: State | None, event: CleanEvent, out: Outputs) -> State | None:
        """Fold the event into the key's state; None deletes the key."""

    def advance(self, state: State, now: int, out: Outputs) -> State | None:
        """Fire every deadline strictly before ``now``; None deletes the key."""

    def next_due(self, state: State) -> int | None:
        """The earliest deadline still to fire, for the host's index."""

    def dumps(self, state: State) -> bytes:
        """The state as the host stores it (memory and changelog)."""

    def loads(self, key: str, data: bytes, start: int = 0) -> State:
        """``dumps``' bytes from ``start`` on, back to the state of ``key``."""
