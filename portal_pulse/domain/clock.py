"""The event-time clock of one stream (SPEC §7).

It reads the latest ``occurred_at`` seen and, once the stream has been idle for a short grace,
moves on with the wall clock so deadlines fire even when no event arrives. It never goes back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["EventClock"]


class EventClock:
    __slots__ = ("_anchor_wall", "_base", "idle_grace")

    def __init__(self, idle_grace: float = 0.5) -> None:
        self.idle_grace = idle_grace
        self._base: datetime | None = None
        self._anchor_wall: float | None = None  # wall reading of the last event (or first tick)

    def now(self, wall: float | None = None, *, idle_allowed: bool = True) -> datetime | None:
        """Current event time; ``wall`` is a monotonic reading, None for pure event time."""
        if self._base is None:
            return None
        if wall is None or not idle_allowed:
            return self._base
        if self._anchor_wall is None:
            # Restored or run_to without a wall reading: idle time counts from this reading,
            # not from the monotonic clock's arbitrary zero.
            self._anchor_wall = wall
            return self._base
        idle = wall - self._anchor_wall
        if idle < self.idle_grace:
            return self._base
        return self._base + timedelta(seconds=idle)

    def observe(self, at: datetime, wall: float | None = None) -> datetime:
        """Take an event's time into account; returns the clock after it."""
        current = self.now(wall)
        self._base = at if current is None or at > current else current
        if wall is not None:
            self._anchor_wall = wall
        return self._base

    def run_to(self, at: datetime) -> datetime:
        """Move the clock to ``at`` (replay ``--until``, or an idle tick), never backwards."""
        if self._base is None or at > self._base:
            self._base = at
        return self._base

    def snapshot(self) -> str | None:
        return self._base.isoformat() if self._base else None

    def restore(self, iso: str | None) -> None:
        if iso:
            self.run_to(datetime.fromisoformat(iso))
