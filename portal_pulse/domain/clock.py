"""The event-time clock of one stream (SPEC §7).

It reads the latest ``occurred_at`` seen and, once the stream has been idle for a short grace,
moves on with the wall clock so deadlines fire even when no event arrives. It never goes back.

A live clock never runs ahead of the wall clock: an event stamped a little in the future (within
the accepted skew) moves it only up to "now", so one practice's clock error cannot fire another
practice's deadline early. The clock reads no clock itself: the host passes "now" as
``not_after`` (the worker: the wall clock; ``replay`` and tests: None, or any instant they like),
which keeps it pure and testable.
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

    def now(
        self,
        wall: float | None = None,
        *,
        idle_allowed: bool = True,
        not_after: datetime | None = None,
    ) -> datetime | None:
        """Current event time; ``wall`` is a monotonic reading, None for pure event time.

        Idle time moves the clock on no further than ``not_after``; the clock never goes back,
        so one that already stood past it (restored from before a wall-clock step back) holds.
        """
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
        moved = self._base + timedelta(seconds=idle)
        if not_after is not None and moved > not_after:
            return max(self._base, not_after)
        return moved

    def observe(
        self, at: datetime, wall: float | None = None, *, not_after: datetime | None = None
    ) -> datetime:
        """Take an event's time into account, up to ``not_after`` at most (the wall clock);
        returns the clock after it."""
        current = self.now(wall, not_after=not_after)
        if not_after is not None and at > not_after:
            at = not_after
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
        """Back to a snapshot; ``ValueError`` for anything ``snapshot`` does not write (the
        clock is then left as it was)."""
        if iso is None or iso == "":
            return
        if not isinstance(iso, str):
            raise ValueError("a clock snapshot is an ISO-8601 string")
        at = datetime.fromisoformat(iso)
        if at.utcoffset() is None:
            raise ValueError("a clock snapshot has a UTC offset")
        self.run_to(at)
