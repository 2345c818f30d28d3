"""One consumer per process: librdkafka fetches, the agents process, commits follow checkpoints.

A thread runs the confluent-kafka consumer (``consume`` in batches) and hands each record to the
``Feed`` of every agent reading its topic; the agents take batches off their feeds on the event
loop, run their checkpoint (``streams.checkpoint``) and then call ``Feed.done``. The thread
commits, per partition, the lowest offset every feed reading it has done, and nothing else
(docs/delivery-guarantees.md). What that rests on, and no timer:

- **Order, once.** Within one assignment each partition's records are handed over in offset
  order from the committed offset, each at most once: a record below the next offset expected
  is dropped. Offsets may jump (transaction markers, aborted records under ``read_committed``,
  compaction): a jump is no gap, librdkafka returns every record the broker has for us.
- **Assignment and revocation are synchronous.** librdkafka calls ``on_assign``/``on_revoke``
  on the consumer thread, inside ``consume``. On revocation the thread waits for the event loop
  to drop what is queued for the old assignment and for each agent's checkpoint in flight to
  finish (``on_revoked`` hooks take the agents' locks), commits what they completed and only
  then lets the partitions go. On assignment it reads the committed offsets, restores the
  state tables of the new partitions from their changelogs, installs them and resets the agents
  (``on_assigned`` hooks) on the event loop, and only then assigns with explicit offsets.
  Records fetched for an earlier assignment can never reach an agent: each batch carries the
  generation it was taken in, and ``Feed.current`` returns nothing for an older one.
- **Back-pressure** pauses a topic's partitions while a feed holds more than ``HIGH`` batches
  and resumes them below ``LOW``; ``consume`` keeps being called meanwhile, so the group
  membership and rebalances are served whatever the agents do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.records import TP, tp_for
from streams.state import StateTable
from streams.warm_copies import WarmCopies

__all__ = ["ConsumerLoop", "Feed", "LoopStats", "Taken"]

logger = logging.getLogger(__name__)

Hook = Callable[[frozenset[TP]], Awaitable[None]]


@dataclass
class Taken:
    """A batch as taken off a feed, with the assignment generation it belongs to."""

    records: list[Message]
    generation: int


@dataclass
class LoopStats:
    """What health, status and metrics read about the loop (typed, no back-references)."""

    rebalances: int = 0
    dropped_stale: int = 0  # records of an earlier assignment, never handed over
    dropped_repeats: int = 0  # records below the next offset expected, never handed over
    paused: int = 0  # times a topic was paused for back-pressure
    commits: int = 0
    commit_errors: int = 0
    restored_records: int = 0  # changelog records read at assignment
    warm_records: int = 0  # keys taken from standby replicas at assignment
    bad_changelog_records: int = 0


class Feed:
    """One agent's input: records of its topics, filled by the loop thread, taken in batches."""

    HIGH = 4  # batches queued: pause fetching the feed's topics
    LOW = 1  # batches queued: resume

    def __init__(
        self, owner: ConsumerLoop, name: str, topics: Iterable[str], max_batch: int, within: float
    ) -> None:
        self.owner = owner
        self.name = name
        self.topics = frozenset(topics)
        self.max_batch = max(1, max_batch)
        self.within = within
        self._lock = threading.Lock()
        self._items: list[Message] = []
        self._full = asyncio.Event()
        self._aio: asyncio.AbstractEventLoop | None = None
        self._signalled = False
        # Per partition, the next offset to read once everything done is committed.
        self.processed: dict[TP, int] = {}
        self.first_activity: float | None = None
        self.last_activity = time.monotonic()

    # -- the loop thread's side -----------------------------------------------------------------

    def put(self, records: list[Message]) -> None:
        with self._lock:
            self._items.extend(records)
            full = len(self._items) >= self.max_batch
            signal = full and not self._signalled
            if signal:
                self._signalled = True
        if signal and self._aio is not None:
            self._aio.call_soon_threadsafe(self._full.set)

    def queued(self) -> int:
        return len(self._items)

    def clear(self) -> int:
        with self._lock:
            n, self._items = len(self._items), []
            self._signalled = False
        return n

    def skip_to(self, tp: TP, offset: int) -> None:
        """Offsets below ``offset`` hold nothing for this feed (transaction markers)."""
        with self._lock:
            if offset > self.processed.get(tp, -1):
                self.processed[tp] = offset

    def restart(self, processed: dict[TP, int]) -> None:
        """A new assignment: done up to the committed offsets."""
        with self._lock:
            self.processed = processed

    def processed_snapshot(self) -> dict[TP, int]:
        with self._lock:
            return dict(self.processed)

    # -- the agent's side (event loop) ----------------------------------------------------------

    def bind(self, aio: asyncio.AbstractEventLoop) -> None:
        self._aio = aio

    def take(self) -> Taken:
        with self._lock:
            items = self._items
            if len(items) <= self.max_batch:
                batch, self._items = items, []
            else:
                batch = items[: self.max_batch]
                del items[: self.max_batch]
            self._signalled = False
            self._full.clear()
            generation = self.owner.generation
        return Taken(batch, generation)

    async def batches(self) -> AsyncIterator[Taken]:
        """Up to ``max_batch`` records: as soon as that many wait, else every ``within`` s."""
        while True:
            if len(self._items) < self.max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.within)
            taken = self.take()
            if taken.records:
                yield taken

    def current(self, taken: Taken) -> list[Message]:
        """The batch's records if their assignment still holds (call under the agent's lock,
        which a revocation waits for); none if a rebalance came between take and lock."""
        if taken.generation != self.owner.generation:
            self.owner.stats.dropped_stale += len(taken.records)
            return []
        return taken.records

    def done(self, records: Sequence[Message]) -> None:
        """The checkpoint of ``records`` is complete: their offsets may be committed."""
        if not records:
            return
        highest: dict[TP, int] = {}
        for m in records:
            highest[tp_for(m.topic(), m.partition())] = m.offset()  # type: ignore[arg-type]
        with self._lock:
            processed = self.processed
            for tp, offset in highest.items():
                if offset + 1 > processed.get(tp, -1):
                    processed[tp] = offset + 1
        self.last_activity = time.monotonic()
        if self.first_activity is None:
            self.first_activity = self.last_activity

    def processed_offset(self, tp: TP) -> int:
        """The last offset done in ``tp`` (-1: none since assignment and nothing committed)."""
        return self.processed.get(tp, 0) - 1


class ConsumerLoop:
    """The process's one consumer, its feeds, its state tables and its commits."""

    ENDS_EVERY = 0.05  # s between two reads of the partitions' cached ends (freshness only)

    def __init__(
        self,
        config: dict[str, Any],
        *,
        max_batch: int = 5_000,
        metrics: Any = None,
        standby: bool = False,
    ) -> None:
        self.config = {
            **config,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # The end of each partition's fetch, as an event in the queue (``_route``): how a
            # tail of transaction markers is known to be read (``_skip_markers``).
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # Range keeps partition p of every topic (and so of every table) on one worker.
            "partition.assignment.strategy": "range",
            "on_commit": self._on_commit,
            # librdkafka's own log lines go through logging (our format, escaped), not stderr.
            "logger": logging.getLogger("librdkafka"),
        }
        self.max_batch = max_batch
        self.metrics = metrics
        self.feeds: list[Feed] = []
        self.tables: list[StateTable] = []
        self.on_assigned: list[Hook] = []
        self.on_revoked: list[Hook] = []
        self.stats = LoopStats()
        self.generation = 0
        self.assignment: frozenset[TP] = frozenset()
        self.ready = False  # assigned and restored: agents and timers may act
        self.committed: dict[TP, int] = {}
        self._next: dict[TP, int] = {}  # next offset expected per partition (handed over)
        self._sent: dict[TP, int] = {}  # commits sent and not yet answered
        self._paused: set[str] = set()
        self._highs: dict[TP, int] = {}
        # Per partition, where the fetch of the current assignment last reached the partition's
        # end (librdkafka's end-of-partition event): past any markers, nothing for us before it.
        self._ends_reached: dict[TP, int] = {}
        self._epoch = 0  # bumped by every rebalance callback (consumer thread only)
        self._ends_read_at = 0.0
        self._by_topic: dict[str, list[Feed]] = {}
        self._consumer: Consumer | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.standby = standby
        self.warm: WarmCopies | None = None
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None

    # -- wiring -----------------------------------------------------------------------------------

    def feed(self, name: str, topics: Iterable[str], max_batch: int, within: float) -> Feed:
        feed = Feed(self, name, topics, max_batch, within)
        self.feeds.append(feed)
        return feed

    def table(self, table: StateTable) -> StateTable:
        self.tables.append(table)
        return table

    @property
    def topics(self) -> list[str]:
        return sorted({t for f in self.feeds for t in f.topics})

    # -- what agents, timers and health ask -----------------------------------------------------

    def highwater(self, tp: TP) -> int | None:
        """The partition's end (last stable offset under read_committed), as last fetched.

        Read by the loop thread (``_read_ends``): librdkafka's consumer is only ever called
        from that thread, never from the event loop."""
        if tp not in self.assignment:
            return None
        return self._highs.get(tp)

    def position(self, tp: TP) -> int:
        """The next offset this worker reads in ``tp``: past what its feeds have done, or the
        group's committed offset (0 when nothing was ever committed)."""
        done = [f.processed.get(tp) for f in self.feeds if tp.topic in f.topics]
        known = [d for d in done if d is not None]
        return max(min(known) if known else 0, self.committed.get(tp, 0))

    def committed_of(self, topic: str) -> dict[int, int]:
        """The group's committed offset per assigned partition of ``topic`` (a copy: commits
        are answered on the consumer thread)."""
        return {tp.partition: o for tp, o in dict(self.committed).items() if tp.topic == topic}

    def caught_up(self, tp: TP) -> bool:
        high = self.highwater(tp)
        if high is None:
            return False
        return high == 0 or self.position(tp) >= high

    # -- running ----------------------------------------------------------------------------------

    def start(self, aio: asyncio.AbstractEventLoop) -> None:
        self._aio = aio
        for feed in self.feeds:
            feed.bind(aio)
        self._by_topic = {t: [f for f in self.feeds if t in f.topics] for t in self.topics}
        self._consumer = Consumer(self.config)
        if self.standby and self.tables:
            self.warm = WarmCopies(
                {**self._reader_config(), "group.id": f"{self.config['group.id']}-standby"},
                self.tables,
            )
            self.warm.start()
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Commit what the agents completed and leave (the caller stopped the agents first)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        if self.warm is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.warm.stop)

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            consumer.subscribe(
                self.topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stopping.is_set():
                epoch = self._epoch
                records = consumer.consume(self.max_batch, 0.1)
                if self._epoch != epoch:
                    # A rebalance ran inside this ``consume``: the batch may hold records
                    # fetched for the old assignment before ones of the new (librdkafka filters
                    # outdated fetches only until they are in the batch). Drop it whole and read
                    # the new assignment again from where it starts.
                    self.stats.dropped_stale += len(records)
                    records = []
                    self._restart_fetch(consumer)
                if records:
                    self._route(records)
                self._flow(consumer)
                self._read_ends(consumer)
                self._commit(consumer, idle=not records)
            self._commit(consumer, idle=True, wait=True)
        except BaseException as exc:  # a fatal consumer error: the worker stops, non-zero
            if not self._stopping.is_set():
                self.failure = exc
                logger.error("Kafka consumer failed: %s", exc)
                if self.on_failure is not None and self._aio is not None:
                    self._aio.call_soon_threadsafe(self.on_failure, exc)
        finally:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                logger.warning("closing the Kafka consumer: %s", exc)

    def _route(self, records: list[Message]) -> None:
        expected = self._next
        out: dict[int, tuple[Feed, list[Message]]] = {}
        by_topic = self._by_topic
        for m in records:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() == KafkaError._PARTITION_EOF:
                    eof = TP(m.topic(), m.partition())  # type: ignore[arg-type]
                    if eof in expected:
                        # Queued behind every record of this fetch below its offset.
                        self._ends_reached[eof] = m.offset()  # type: ignore[assignment]
                else:
                    logger.warning("Kafka consumer: %s (retrying)", err.str())
                continue
            topic, offset = m.topic(), m.offset()
            where = tp_for(topic, m.partition())  # type: ignore[arg-type]
            want = expected.get(where)
            if want is None:
                continue  # not (or no longer) assigned
            if offset < want:  # type: ignore[operator]
                self.stats.dropped_repeats += 1
                continue
            expected[where] = offset + 1  # type: ignore[operator]
            for feed in by_topic.get(topic, ()):  # type: ignore[arg-type]
                slot = out.get(id(feed))
                if slot is None:
                    out[id(feed)] = slot = (feed, [])
                slot[1].append(m)
        for feed, batch in out.values():
            feed.put(batch)

    def _read_ends(self, consumer: Consumer) -> None:
        """Each assigned partition's end as librdkafka last fetched it (no broker call)."""
        now = time.monotonic()
        if now - self._ends_read_at < self.ENDS_EVERY:
            return
        self._ends_read_at = now
        highs: dict[TP, int] = {}
        for tp in self.assignment:
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), cached=True
                )
            except KafkaException:
                continue
            if high is not None and high >= 0:
                highs[tp] = high
        self._highs = highs

    def _flow(self, consumer: Consumer) -> None:
        """Pause a topic whose feeds are full; resume it once they have room."""
        for topic, feeds in self._by_topic.items():
            queued = max((f.queued() / f.max_batch for f in feeds), default=0)
            if topic not in self._paused and queued >= Feed.HIGH:
                tps = [TopicPartition(t, p) for t, p in self.assignment if t == topic]
                if tps:
                    consumer.pause(tps)
                    self._paused.add(topic)
                    self.stats.paused += 1
            elif topic in self._paused and queued <= Feed.LOW:
                tps = [TopicPartition(t, p) for t, p in self.assignment if t == topic]
                consumer.resume(tps)
                self._paused.discard(topic)

    def _targets(self, idle: bool) -> dict[TP, int]:
        """Per assigned partition, the offset every feed reading it has done."""
        done: dict[TP, list[int]] = {}
        snapshots = [(f, f.processed_snapshot()) for f in self.feeds]
        for tp in self.assignment:
            values = []
            for feed, processed in snapshots:
                if tp.topic in feed.topics:
                    values.append(processed.get(tp, -1))
            done[tp] = values
        targets = {tp: min(v) for tp, v in done.items() if v and min(v) >= 0}
        if idle:
            self._skip_markers(targets, snapshots)
        return targets

    def _skip_markers(
        self,
        targets: dict[TP, int],
        snapshots: list[tuple[Feed, dict[TP, int]]],
    ) -> None:
        """Past the last record handed over, a partition may hold offsets that are no records
        for us (transaction markers, aborted records): once every feed has done everything
        handed over, the fetch's end-of-partition event says how far the partition is read.

        Not librdkafka's ``position``: right after an ``assign`` it still answers the previous
        fetch's position (records dropped with a stale batch, or read before a rebalance), and
        skipping to it would lose them. The end event is queued by the current fetch only."""
        if any(f.queued() for f in self.feeds):
            return
        for tp, end in list(self._ends_reached.items()):
            nxt = self._next.get(tp)
            if nxt is None or end <= nxt or targets.get(tp) != nxt:
                continue
            self._next[tp] = end
            targets[tp] = end
            for feed, _ in snapshots:
                if tp.topic in feed.topics:
                    feed.skip_to(tp, end)

    def _commit(self, consumer: Consumer, *, idle: bool, wait: bool = False) -> None:
        targets = self._targets(idle)
        due = [
            TopicPartition(tp.topic, tp.partition, offset)
            for tp, offset in targets.items()
            if offset > self.committed.get(tp, -1) and offset != self._sent.get(tp)
        ]
        if wait:
            due = [
                TopicPartition(tp.topic, tp.partition, offset)
                for tp, offset in targets.items()
                if offset > self.committed.get(tp, -1)
            ]
        if not due:
            return
        for tpo in due:
            self._sent[TP(tpo.topic, tpo.partition)] = tpo.offset
        try:
            if wait:
                answered = consumer.commit(offsets=due, asynchronous=False)
                for tpo in answered or ():
                    if tpo.error is None:
                        self.committed[TP(tpo.topic, tpo.partition)] = tpo.offset
            else:
                consumer.commit(offsets=due, asynchronous=True)
        except KafkaException as exc:
            # Not committed now: sent again at the next pass (a re-read is idempotent).
            self.stats.commit_errors += 1
            for tpo in due:
                self._sent.pop(TP(tpo.topic, tpo.partition), None)
            logger.warning("Kafka commit failed: %s (retried)", exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            self.stats.commit_errors += 1
            logger.warning("Kafka commit failed: %s (retried)", err.str())
        for tpo in partitions:
            tp = TP(tpo.topic, tpo.partition)
            self._sent.pop(tp, None)
            if err is None and tpo.error is None and tpo.offset >= 0:
                self.stats.commits += 1
                if tpo.offset > self.committed.get(tp, -1):
                    self.committed[tp] = tpo.offset

    # -- rebalances (on the consumer thread, inside consume) ----------------------------------

    def _call(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` on the event loop and wait for it (the agents act there)."""
        assert self._aio is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._aio)  # type: ignore[arg-type]
        while True:
            try:
                return future.result(timeout=1.0)
            except TimeoutError:
                if self._stopping.is_set() or self._aio.is_closed():
                    future.cancel()
                    raise

    def _restart_fetch(self, consumer: Consumer) -> None:
        """Assign the current partitions again at the next offsets expected (nothing of the
        dropped batch was handed over, so that is where the assignment started)."""
        self._ends_reached.clear()  # events of the dropped fetch say nothing of the new one
        if self.assignment:
            starts = [
                TopicPartition(tp.topic, tp.partition, self._next.get(tp, OFFSET_BEGINNING))
                for tp in sorted(self.assignment)
            ]
            consumer.assign(starts)
            consumer.resume(starts)  # a pause from before is no longer wanted: feeds are empty
            self._paused.clear()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        began = time.monotonic()
        tps = frozenset(TP(p.topic, p.partition) for p in partitions)
        self.stats.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances.inc()
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(tps):
            by_topic.setdefault(topic, []).append(partition)
        logger.info(
            "partitions assigned (rebalance %d): %s",
            self.stats.rebalances,
            "; ".join(f"{t} {ps}" for t, ps in by_topic.items()) or "none",
        )
        committed = self._committed_offsets(consumer, partitions)
        read_before, warm_before = self.stats.restored_records, self.stats.warm_records
        restored = self._restore(tps)
        self._call(self._install(tps, committed, restored))
        consumer.assign(
            [
                TopicPartition(tp.topic, tp.partition, committed.get(tp, OFFSET_BEGINNING))
                for tp in sorted(tps)
            ]
        )
        logger.info(
            "state recovered in %.1fs: processing (rebalance %d; %d changelog records read, "
            "%d keys from standby replicas)",
            time.monotonic() - began,
            self.stats.rebalances,
            self.stats.restored_records - read_before,
            self.stats.warm_records - warm_before,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(consumer, commit=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group went on without us: our commits would be refused; the new owner re-reads.
        self._release(consumer, commit=False)

    def _release(self, consumer: Consumer, *, commit: bool) -> None:
        self._epoch += 1
        tps = self.assignment
        self.ready = False
        try:
            self._call(self._revoke(tps))
        finally:
            if commit:
                try:
                    self._commit(consumer, idle=False, wait=True)
                except KafkaException as exc:
                    logger.warning(
                        "commit at revocation failed: %s (re-read by the next owner)", exc
                    )
            self.assignment = frozenset()
            self._highs = {}
            self._next.clear()
            self._ends_reached.clear()
            self._sent.clear()
            self._paused.clear()
            for feed in self.feeds:
                feed.restart({})
            consumer.unassign()

    def _committed_offsets(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[TP, int]:
        answered = self._retrying(
            lambda: consumer.committed(partitions, timeout=10), "reading the committed offsets"
        )
        return {TP(t.topic, t.partition): t.offset for t in answered if t.offset >= 0}

    def _restore(self, tps: frozenset[TP]) -> dict[str, dict[Any, Any]]:
        """Each table's contents for the newly assigned partitions, read from its changelog."""
        restored: dict[str, dict[Any, Any]] = {}
        wanted = {
            table.name: sorted({tp.partition for tp in tps if tp.topic in table.by})
            for table in self.tables
        }
        if not any(wanted.values()):
            return {table.name: {} for table in self.tables}
        reader = Consumer(
            {**self._reader_config(), "group.id": f"{self.config['group.id']}-restore"}
        )
        try:
            for table in self.tables:
                data: dict[Any, Any] = {}
                parts = wanted[table.name]
                if parts:
                    self._read_changelog(reader, table, parts, data)
                restored[table.name] = data
        finally:
            reader.close()
        return restored

    def _reader_config(self) -> dict[str, Any]:
        """A consumer that only reads assigned partitions: never joins a group, never commits."""
        return {
            k: v
            for k, v in self.config.items()
            if k not in ("on_commit", "group.instance.id", "partition.assignment.strategy")
        }

    def _read_changelog(
        self, reader: Consumer, table: StateTable, parts: list[int], data: dict[Any, Any]
    ) -> None:
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for p in parts:
            low, high = self._retrying(
                lambda p=p: reader.get_watermark_offsets(TopicPartition(table.topic, p), 10)
            )
            start = low
            warm = self.warm.copy_of(table.topic, p) if self.warm is not None else None
            if warm is not None and warm[1] > low:
                data.update(warm[0])
                start = warm[1]
                self.stats.warm_records += len(warm[0])
            if high > start:
                ends[p] = high
                starts.append(TopicPartition(table.topic, p, start))
        if not starts:
            return
        reader.assign(starts)
        remaining = dict(ends)
        while remaining:
            if self._stopping.is_set():
                raise RuntimeError("stopped while restoring state")
            for m in reader.consume(10_000, 0.5):
                if m.error() is not None:
                    if m.error().fatal():
                        raise KafkaException(m.error())
                    continue
                try:
                    table.apply(data, m.key(), m.value())
                    self.stats.restored_records += 1
                except ValueError:
                    self.stats.bad_changelog_records += 1
            for tpo in reader.position([TopicPartition(table.topic, p) for p in remaining]):
                if tpo.offset >= remaining[tpo.partition]:
                    del remaining[tpo.partition]
        reader.unassign()
        if self.stats.bad_changelog_records:
            logger.warning(
                "%s: %d changelog records of an unknown shape skipped",
                table.topic,
                self.stats.bad_changelog_records,
            )

    def _retrying(self, call: Callable[[], Any], what: str = "restoring state") -> Any:
        """``call`` until the broker answers (or the loop stops)."""
        delay = 0.5
        while True:
            try:
                return call()
            except KafkaException as exc:
                if self._stopping.is_set():
                    raise
                logger.warning("%s: %s (retrying)", what, exc)
                time.sleep(delay)  # liveness only: the broker is away
                delay = min(delay * 2, 10.0)

    # -- the event loop's side of a rebalance ----------------------------------------------------

    async def _install(
        self, tps: frozenset[TP], committed: dict[TP, int], restored: dict[str, dict[Any, Any]]
    ) -> None:
        for table in self.tables:
            table.install(restored.get(table.name, {}))
        self.committed = dict(committed)
        self._next = {tp: committed.get(tp, 0) for tp in tps}
        self._ends_reached.clear()
        for feed in self.feeds:
            feed.restart({tp: off for tp, off in committed.items() if tp.topic in feed.topics})
        self.assignment = tps
        for hook in self.on_assigned:
            await hook(tps)
        self.ready = True

    async def _revoke(self, tps: frozenset[TP]) -> None:
        self.generation += 1
        self.ready = False
        for feed in self.feeds:
            self.stats.dropped_stale += feed.clear()
        for hook in self.on_revoked:
            await hook(tps)
