"""Which source partitions each agent has fully processed; the basis of "idle" and "caught up"."""

from __future__ import annotations

import time
from collections.abc import Iterable

from faust.types import TP, AppT

__all__ = ["Progress"]


class Progress:
    """Last processed offset per topic-partition, and when anything was last processed."""

    def __init__(self, topics: Iterable[str] = ()) -> None:
        self.topics = set(topics)
        self.offsets: dict[TP, int] = {}
        self.first_activity: float | None = None
        self.last_activity = time.monotonic()

    def done(self, tp: TP, offset: int) -> None:
        if offset > self.offsets.get(tp, -1):
            self.offsets[tp] = offset
        self.last_activity = time.monotonic()
        if self.first_activity is None:
            self.first_activity = self.last_activity

    def caught_up(self, app: AppT, tp: TP) -> bool:
        """True when every record up to the partition's high-water mark has been processed."""
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:
            return False
        if highwater is None:
            return False
        if highwater == 0 or self.offsets.get(tp, -1) >= highwater - 1:
            return True
        if tp not in self.offsets:
            # Nothing read since start: the group's committed offset (the next one to read)
            # tells whether anything is left, e.g. after a restart with no new records.
            committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
            return committed is not None and committed >= highwater
        return False

    def all_caught_up(self, app: AppT, tps: Iterable[TP]) -> bool:
        return all(self.caught_up(app, tp) for tp in tps)
