"""The one checkpoint every agent uses: rows written → outputs delivered → state → acknowledge.

Order is the guarantee (docs/delivery-guarantees.md):

1. ClickHouse rows of the batch are inserted (the caller does this, with dedup tokens);
2. the Kafka outputs the batch produced (clean events, dead letters, alerts, facts) are delivered;
3. the changelog records of the state the batch changed are delivered, each key stamped with
   the input offset it reflects; partition markers go last, in a flush of their own;
4. only then are the input offsets released for Faust to commit.

A stop anywhere in between re-reads inputs whose outputs may already exist: outputs carry
deterministic ids, the state stamps make a re-read event a no-op for keys that already hold it,
and the sinks skip positions they have written. Nothing is acknowledged that was not processed:
``GatedConsumer`` refuses every acknowledgement the checkpoint did not release, including the
ones Faust makes itself for records it skips during a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from typing import Any

from faust.streams import Stream
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from mode.services import WaitResults

from streams.delivery import DeliveringProducer
from streams.state import ChangelogStore

__all__ = ["Checkpoint", "GatedConsumer", "install_gated_consumer"]

logger = logging.getLogger(__name__)


class GatedConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, acknowledging only offsets a checkpoint has released."""

    _released: set[tuple[TP, int]] | None = None

    def release(self, message: Any) -> None:
        if self._released is None:
            self._released = set()
        self._released.add((message.tp, message.offset))

    def ack(self, message: Any) -> bool:
        key = (message.tp, message.offset)
        if self._released is None or key not in self._released:
            return False  # processed by nobody yet: it must be read again
        self._released.discard(key)
        return super().ack(message)

    # -- seeks and Faust's "gaps" ----------------------------------------------------------------
    #
    # When a fetched record is more than one offset past the last one read, Faust takes the
    # offsets in between for records compaction or transaction markers removed, and counts them as
    # acknowledged. Right after a seek that is wrong: a record fetched before the seek arrives
    # after it, and the offsets "skipped" are records still to be read. Counted as acknowledged,
    # they could be committed unprocessed; mixed with the real acknowledgements (as duplicates)
    # they also slowed commits to one offset per commit interval. Gaps seen within a few seconds
    # of a seek on their partition are therefore ignored.

    _sought_at: dict[TP, float] | None = None
    SEEK_GAP_GRACE = 10.0

    def _stamp_seek(self, tps: Iterable[TP]) -> None:
        if self._sought_at is None:
            self._sought_at = {}
        now = time.monotonic()
        for tp in tps:
            self._sought_at[TP(tp.topic, tp.partition)] = now

    async def perform_seek(self) -> None:
        self._stamp_seek(self.assignment())
        await super().perform_seek()
        # aiokafka seeks only partitions whose committed offset is above 0. Records fetched for
        # the others while Faust paused them (table recovery after an assignment) were dropped,
        # and the fetcher had moved past them: nothing arrived until the stall watchdog re-read
        # the partition (alerts, response facts, a sink's clean partitions: 5-9 s at start-up
        # and after a failover). Read those from their start as well.
        unsought = {
            tp: 0
            for tp in self.assignment()
            if not self._committed_offset.get(tp) and not self._is_changelog_tp(tp)
        }
        if unsought:
            await self.seek_wait(unsought)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self._stamp_seek(partitions)
        await super().seek_wait(partitions)

    async def seek(self, partition: TP, offset: int) -> None:
        self._stamp_seek([partition])
        await super().seek(partition, offset)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        sought = (self._sought_at or {}).get(TP(tp.topic, tp.partition))
        if sought is not None and time.monotonic() - sought < self.SEEK_GAP_GRACE:
            return  # a record fetched before the seek, not a hole in the log
        await super()._add_gap(tp, offset_from, offset_to)

    def forget(self, tps: Iterable[TP]) -> None:
        """Releases of partitions this worker lost are void (their offsets are re-read)."""
        gone = set(tps)
        if self._released:
            self._released = {k for k in self._released if k[0] not in gone}

    # -- delivery to the streams ------------------------------------------------------------------

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """Faust's fetch loop hands every record to the streams as ``wait_first(deliver(record),
        suspend_flow.wait())``: four tasks and an ``asyncio.wait`` per record, a sixth of the
        worker's time. Delivery nearly always completes without suspending (the stream's queue
        has room), so it is first run inline; only a delivery that has to wait (a full queue,
        flow control) is handed on, half-run, to the general path, which still lets a rebalance
        (``suspend_flow``) or a stop interrupt it. The result is the one Faust would see: the
        delivery finished first."""
        if (
            len(coros) != 2
            or timeout is not None
            or not asyncio.iscoroutine(coros[0])
            or self.suspend_flow.is_set()
            or self.should_stop
        ):
            return await super().wait_first(*coros, timeout=timeout)
        deliver, other = coros
        try:
            suspended_on = deliver.send(None)
        except StopIteration as done:
            if asyncio.iscoroutine(other):
                other.close()  # never started
            return WaitResults([deliver], [done.value], False)
        return await super().wait_first(_Resumed(deliver, suspended_on), other)


class _Resumed:
    """Awaitable finishing a coroutine already run up to its first suspension (``first``)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task (a cancellation): pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


def install_gated_consumer(app: Any) -> None:
    """Make the app build a GatedConsumer (before anything touches ``app.consumer``)."""
    app.transport.Consumer = GatedConsumer


class Checkpoint:
    """Serializes state changes with their checkpoint; one per agent that keeps state."""

    def __init__(
        self,
        delivery: DeliveringProducer,
        stores: Sequence[ChangelogStore] = (),
        markers: Sequence[ChangelogStore] = (),
    ) -> None:
        self.delivery = delivery
        self.stores = list(stores)
        self.markers = list(markers)
        # Held while state changes and until their checkpoint is complete: the agent's batch,
        # the timers and a rebalance never interleave inside one.
        self.lock = asyncio.Lock()
        self.completed = 0

    async def complete(
        self, ack: Callable[[Any], Any] | None = None, events: Sequence[Any] = ()
    ) -> None:
        """Steps 2–4 above for the state changed so far and the batch's input ``events``."""
        await self.delivery.flush()
        if sum(store.write_changes() for store in self.stores):
            await self.delivery.flush()
        if sum(marker.write_changes() for marker in self.markers):
            await self.delivery.flush()
        if ack is not None and events:
            await release_and_ack(ack, events)
        self.completed += 1


async def release_and_ack(ack: Callable[[Any], Any], events: Sequence[Any]) -> None:
    """Release each event's offset at the consumer gate, then acknowledge it on its stream.

    A Faust stream's ``ack`` is the event's own ``ack`` plus two sensor calls (no-ops with
    ``LeanMonitor``) in a coroutine per event; the event's ``ack`` is called directly then."""
    consumer = None
    direct = isinstance(getattr(ack, "__self__", None), Stream)
    for event in events:
        if consumer is None:
            consumer = event.app.consumer
        if isinstance(consumer, GatedConsumer):
            consumer.release(event.message)
        if direct:
            event.ack()
            continue
        result = ack(event)
        if asyncio.iscoroutine(result):
            await result
