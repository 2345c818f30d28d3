"""Re-reads a partition whose committed offset stopped short of its end while the worker idles.

Offsets are committed only for records a checkpoint released (``streams.checkpoint``). Faust can
still drop a fetched record without handing it to an agent: its stream skips records of a stale
consumer generation or that arrive while flow control is suspended during a rebalance, and its
fetcher has already moved past them. Nothing is lost — the record is never acknowledged — but
Faust commits only a contiguous run of acknowledged offsets, so that partition's commits stop
there and the worker would never catch up by itself.

The watchdog notices a partition whose commits have not moved for ``stall_seconds`` although
records lie beyond them, while the agents reading it have processed nothing for a second, logs
it, and seeks the partition back to its committed offset. A busy agent is no sign of a stall:
with a large backlog Faust hands some partitions' fetched records over only after others', and
seeking those back would throw the fetched records away (measured: every partition of a fresh
backlog re-read after 5 s, adding 5 s to start-up and to failover). Every
agent recognises a re-read record (state stamps, partition markers, raw positions, sink
positions), so a re-read adds nothing twice; it only fills the hole, and commits move on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import faust
from faust.types import TP

from streams.app import Runtime

__all__ = ["StallWatchdog"]

logger = logging.getLogger(__name__)


@dataclass
class _Seen:
    committed: int
    processed: int
    since: float


class StallWatchdog:
    BUSY_SECONDS = 1.0

    def __init__(self, app: faust.App, rt: Runtime, stall_seconds: float = 10.0) -> None:
        self.app = app
        self.rt = rt
        self.stall_seconds = stall_seconds
        self._seen: dict[TP, _Seen] = {}
        self.reseeks = 0

    def _topics(self) -> set[str]:
        return {t for p in self.rt.progress.values() for t in p.topics}

    def _processed(self, tp: TP) -> int:
        return max((p.offsets.get(tp, -1) for p in self.rt.progress.values()), default=-1)

    def _busy(self, tp: TP, now: float) -> bool:
        """Whether an agent reading ``tp``'s topic processed anything within the last second."""
        return any(
            now - p.last_activity < self.BUSY_SECONDS
            for p in self.rt.progress.values()
            if tp.topic in p.topics
        )

    async def check(self) -> None:
        app = self.app
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            self._seen.clear()
            return
        consumer = app.consumer
        topics = self._topics()
        now = time.monotonic()
        assigned = {tp for tp in consumer.assignment() if tp.topic in topics}
        for tp in list(self._seen):
            if tp not in assigned:
                del self._seen[tp]
        for tp in assigned:
            highwater = consumer.highwater(tp)
            # Faust keeps the committed offset (the next to read) as None when it is 0.
            committed = consumer._committed_offset.get(tp) or 0
            processed = self._processed(tp)
            if highwater is None or committed >= highwater:
                self._seen.pop(tp, None)
                continue
            seen = self._seen.get(tp)
            if seen is None or seen.committed != committed or seen.processed != processed:
                self._seen[tp] = _Seen(committed, processed, now)
                continue
            if now - seen.since < self.stall_seconds or self.rt.batches_in_flight:
                continue  # a batch still waiting for ClickHouse or the broker is not a stall
            if self._busy(tp, now):
                continue  # its records may be queued behind other partitions' records
            logger.warning(
                "%s:%d stalled for %.0fs: committed %d, processed up to %d, log end %d; "
                "reading again from the committed offset",
                tp.topic, tp.partition, now - seen.since, committed, processed, highwater,
            )  # fmt: skip
            self.reseeks += 1
            seen.since = now
            try:
                await consumer.seek_wait({tp: committed})  # on the consumer thread
            except Exception as exc:  # broker away or a rebalance: try again next period
                logger.warning("could not seek %s:%d: %r", tp.topic, tp.partition, exc)

    def register(self) -> None:
        self.app.timer(max(1.0, self.stall_seconds / 4), name="stall-watchdog")(self.check)
