"""Each partition's records reach an agent once and in offset order, whatever Faust delivers.

The agents' idempotence rests on order: a partition marker says "every input up to offset N is
in state", a sink remembers the highest offset it wrote. Faust does not quite guarantee order
around a rebalance: records fetched before the consumer seeks to its committed offsets can still
reach the agent after the seek, so a batch may hold offset 831 before 87…830 are re-read — and a
marker or sink position set to 831 would then skip 87…830 for good (seen in the fault-injection
suite: a whole backlog missing after a kill -9 during start-up).

``InOrder`` admits a partition's record only when it is the next one expected (starting at the
group's committed offset once recovery is complete). Anything below is a second delivery of what
was already handled: acknowledged, not processed again. Anything above means records are
missing in between: it is held back (neither processed nor acknowledged) and the partition is
read again from the expected offset. Records the broker no longer has (retention) are skipped
with a warning, after asking the broker where the partition now begins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

__all__ = ["Admitted", "InOrder"]

logger = logging.getLogger(__name__)


@dataclass
class Admitted:
    fresh: list[Any] = field(default_factory=list)  # to process, in order
    seen: list[Any] = field(default_factory=list)  # handled before: acknowledge only
    held: int = 0  # neither: read again later
    gaps: dict[TP, int] = field(default_factory=dict)  # partition → offset to read again from

    @property
    def to_ack(self) -> list[Any]:
        return [*self.seen, *self.fresh]


class InOrder:
    def __init__(self, app: faust.App, name: str, reseek_interval: float = 2.0) -> None:
        self.app = app
        self.name = name
        self.reseek_interval = reseek_interval
        self.expected: dict[TP, int] = {}
        self._last_seek: dict[TP, float] = {}
        self.held = 0
        self.reseeks = 0
        self._early: set[TP] = set()

    def reset(self) -> None:
        """After a rebalance: start again from the committed offsets."""
        self.expected.clear()
        self._last_seek.clear()

    def register(self, interval: float = 0.5) -> None:
        self.app.timer(interval, name=f"{self.name}-in-order")(self.resume)

    async def resume(self) -> None:
        """Once ready, read again what was held back before the seek to committed offsets."""
        if not self._early or not self._ready():
            return
        early, self._early = self._early, set()
        assigned = self.app.consumer.assignment()
        committed = self.app.consumer._committed_offset
        gaps = {tp: self.expected.get(tp, committed.get(tp) or 0) for tp in early if tp in assigned}
        for tp in gaps:
            self._last_seek.pop(tp, None)
        await self.read_again(gaps)

    def _ready(self) -> bool:
        app = self.app
        return not app.rebalancing and app.tables.recovery.completed.is_set()

    def admit(self, events: Sequence[Any]) -> Admitted:
        out = Admitted()
        if not self._ready():
            # Fetched before the consumer sought to the committed offsets: read again once it has
            # (Faust seeks only partitions that have a committed offset; ``resume`` does the rest).
            for event in events:
                self._early.add(event.message.tp)
            out.held = len(events)
            self.held += out.held
            return out
        committed = self.app.consumer._committed_offset
        for event in events:
            msg = event.message
            tp, offset = msg.tp, msg.offset
            if tp in out.gaps:
                out.held += 1  # the rest of this partition waits for the missing records
                continue
            expected = self.expected.get(tp)
            if expected is None:
                # Faust keeps a committed offset of 0 as None.
                expected = committed.get(tp) or 0
            if offset < expected:
                out.seen.append(event)
            elif offset == expected:
                out.fresh.append(event)
                expected += 1
            else:
                out.gaps[tp] = expected
                out.held += 1
            self.expected[tp] = expected
        self.held += out.held
        return out

    async def read_again(self, gaps: dict[TP, int]) -> None:
        """Seek each partition with missing records back to the first one missing."""
        consumer = self.app.consumer
        now = time.monotonic()
        for tp, expected in gaps.items():
            if now - self._last_seek.get(tp, 0.0) < self.reseek_interval:
                continue  # a seek is on its way; its records may simply be queued behind
            self._last_seek[tp] = now
            start = expected
            try:
                earliest = (await consumer.earliest_offsets(tp)).get(tp)
            except Exception:  # the broker will be asked again at the next gap
                earliest = None
            if earliest is not None and earliest > expected:
                logger.warning(
                    "%s: %s:%d records %d…%d are no longer in the topic (retention?); "
                    "continuing from %d",
                    self.name, tp.topic, tp.partition, expected, earliest - 1, earliest,
                )  # fmt: skip
                self.expected[tp] = start = earliest
            else:
                logger.info(
                    "%s: reading %s:%d again from offset %d (records skipped or out of order)",
                    self.name, tp.topic, tp.partition, expected,
                )  # fmt: skip
            self.reseeks += 1
            try:
                # Through the consumer thread: aiokafka must not be sought from the event loop
                # while that thread is fetching.
                await consumer.seek_wait({tp: start})
            except Exception as exc:  # broker away or a rebalance: the next gap asks again
                self._last_seek.pop(tp, None)
                logger.warning(
                    "%s: could not seek %s:%d: %r", self.name, tp.topic, tp.partition, exc
                )
