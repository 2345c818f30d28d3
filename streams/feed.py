"""Fetched records reach an agent as lists, without Faust's per-record stream machinery.

Every agent here works in batches (``Checkpoint``), yet Faust hands records over one at a time:
its conductor puts each in the stream's queue, the stream iterator takes it out again (sensors,
current event, acknowledgement bookkeeping), and ``noack_take`` runs a processor coroutine per
record to rebuild the list the agent wanted in the first place. Profiled, that relay cost about a
tenth of the worker's time.

``BatchQueue`` takes the place of the queue behind the agent's channel: the conductor still
decodes each record (``RawBytesSchema``: an event holding the Kafka bytes) and delivers it, now
onto a plain list, and the agent takes whole batches off it. What the stream iterator did that
matters here is kept:

- records of an earlier consumer generation (fetched before a rebalance) are dropped, not
  processed; they are never acknowledged, so they are read again (``streams.checkpoint``);
- nothing is taken while flow control is suspended for a rebalance, and the queue is emptied
  when it resumes, as Faust's own stream queues are;
- a partition whose records pile up is paused at the fetcher and resumed once the agent has
  caught up (Faust's buffer pressure);
- each batch stamps its partitions' inbound time, which Faust's slow-processing check and the
  stall watchdog read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust

__all__ = ["BatchQueue", "batches_of"]


class BatchQueue:
    """The queue a Faust channel delivers into, read a batch at a time."""

    PRESSURE_HIGH = 0.8  # of maxsize: pause fetching the partition (Faust's ratio, 1 / 1.25)
    PRESSURE_DROP = 0.4  # of maxsize: resume it

    def __init__(self, app: faust.App, maxsize: int, wake_at: int) -> None:
        self.app = app
        self.maxsize = maxsize
        self.wake_at = max(1, wake_at)
        self._items: list[Any] = []
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._pending_drop: set[Callable[[], None]] = set()
        self._high = max(1, int(maxsize * self.PRESSURE_HIGH))
        self._drop = int(maxsize * self.PRESSURE_DROP)
        self.dropped_stale = 0
        self._thrown: BaseException | None = None
        # Emptied when flow control resumes after a rebalance, like Faust's stream queues.
        app.flow_control.manage_queue(self)  # type: ignore[arg-type]

    # -- the conductor's side (faust.transport.conductor) -----------------------------------------

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait_enhanced(
        self,
        value: Any,
        *,
        on_pressure_high: Callable[[], None],
        on_pressure_drop: Callable[[], None],
    ) -> bool:
        items = self._items
        items.append(value)
        if len(items) >= self.wake_at:
            self._ready.set()
        if len(items) >= self._high and on_pressure_drop not in self._pending_drop:
            self._pending_drop.add(on_pressure_drop)
            on_pressure_high()
            return True
        return False

    async def put(self, value: Any) -> None:
        """The conductor's path for a full queue: wait for room."""
        while self.full():
            self._space.clear()
            await self._space.wait()
        self._items.append(value)
        if len(self._items) >= self.wake_at:
            self._ready.set()

    def clear(self) -> None:
        self._items.clear()
        self._release_pressure()

    def _throw(self, exc: BaseException) -> None:
        """How Faust ends an agent's actor at shutdown (``StopAsyncIteration``): the taker
        finishes its current batch, then ends (or raises anything else)."""
        self._thrown = exc
        self._ready.set()

    # -- the agent's side -------------------------------------------------------------------------

    def take(self, max_: int) -> list[Any]:
        """Up to ``max_`` records of the current consumer generation, oldest first."""
        items = self._items
        if len(items) <= max_:
            batch, self._items = items, []
        else:
            batch = items[:max_]
            del items[:max_]
        if len(self._items) < self.wake_at:
            self._ready.clear()
        if len(self._items) <= self._drop:
            self._release_pressure()
        if not self.full():
            self._space.set()
        generation = self.app.consumer_generation_id
        fresh = [e for e in batch if e.message.generation_id == generation]
        self.dropped_stale += len(batch) - len(fresh)
        if fresh:
            stamp = time.monotonic()
            inbound = self.app.monitor.stream_inbound_time
            for tp in {e.message.tp for e in fresh}:
                inbound[tp] = stamp
        return fresh

    async def batches(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
        """Lists of up to ``max_`` records: as soon as ``max_`` are waiting, else every
        ``within`` seconds (what ``Stream.noack_take`` yields, without its per-record relay)."""
        flow = self.app.flow_control
        while True:
            if len(self._items) < max_:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), within)
            if self._thrown is not None:
                thrown, self._thrown = self._thrown, None
                if isinstance(thrown, StopAsyncIteration):
                    return
                raise thrown
            if not flow.is_active():
                # A rebalance: what is queued belongs to the old assignment (cleared on resume).
                await flow.acquire()
                continue
            batch = self.take(max_)
            if batch:
                yield batch

    def _release_pressure(self) -> None:
        pending, self._pending_drop = self._pending_drop, set()
        for resume_fetching in pending:
            resume_fetching()


async def batches_of(stream: faust.StreamT, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """The agent's records in batches, taken off the channel's queue directly.

    Iterating the stream's channel registers it with the conductor, so the consumer subscribes
    to its topics exactly as for a stream; the channel's queue is replaced before the first
    record can arrive (no await in between). The events are acknowledged by the caller
    (``streams.checkpoint.release_and_ack``), never here.
    """
    app = stream.app
    channel = stream.channel.__aiter__()
    queue = BatchQueue(app, app.conf.stream_buffer_maxsize, wake_at=max_)
    channel._queue = queue  # type: ignore[attr-defined]
    try:
        async for batch in queue.batches(max_, within):
            yield batch
    except asyncio.CancelledError:
        # Faust cancels its agents' actors when the worker stops, before it marks them stopped,
        # and takes a cancelled actor that is not stopped for a crash. A stream would have
        # ended by then; waiting for records, the agent ends the same way.
        if app.should_stop:
            return
        raise
