"""Clean topic → the keyed state machines → alerts and response facts on their topics.

State lives in changelog-backed tables (a restarted worker carries on). Each clean partition
has its own event-time clock; a timer moves the clocks of caught-up, idle partitions with the
wall clock so deadlines fire within about a second when no event arrives.

Exactly-once effect (docs/delivery-guarantees.md): every batch and every tick ends in
``Checkpoint.complete`` — events rows written, outputs delivered, state changelog, then each
partition's marker (clock, last input offset, raw positions seen), then the acknowledgement.
After a restart a record at or below the marker's offset is skipped whole, a key whose stamp
already holds an input skips it, and a second copy of a raw record (ingest re-read after a
crash) is recognised by its raw position.

The clean topic is the pipeline's own, but a record on it is still parsed as input: headers and
value are read inside the per-record guard, and one that does not parse is dead-lettered
(``bad_header``, ``bad_internal_record``) while the stream goes on. No partition clock runs
past the wall clock (SPEC §7): the watermark and idle time move it up to "now" at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.domain.clock import EventClock
from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import Engine
from portal_pulse.ingest import Rejected
from portal_pulse.kafka_admin import STATE_TABLE_SUFFIX
from portal_pulse.late_events import LateEvents
from portal_pulse.pipeline import build_machines, load_practices
from schemas.catalogue import source_of
from schemas.serializer import clean_event_from_record
from sinks.batching import Batch, ClickHouseTableSink
from sinks.rows import event_row
from streams.checkpoint import Checkpoint, CheckpointAbandoned
from streams.codecs import alert_to_bytes, live_to_bytes, response_to_bytes
from streams.delivery import DeliveringProducer
from streams.records import TP, Message
from streams.runtime import Runtime
from streams.sink_agents import events_table_sink
from streams.state import MARKER_VALUES, STATE_VALUES, ChangelogStore, StateTable
from streams.watermark import BadHeader, RecordHeaders, combine, raw_index, read_headers

__all__ = ["CollectingOutputs", "Processors", "register"]


def _second(snapshot: str | None) -> str | None:
    """A clock snapshot to the second: the marker is rewritten when it moves that much."""
    if snapshot is None:
        return None
    return datetime.fromisoformat(snapshot).replace(microsecond=0).isoformat()


logger = logging.getLogger(__name__)


class CollectingOutputs:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.responses: list[ResponseFact] = []

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def response(self, fact: ResponseFact) -> None:
        self.responses.append(fact)

    def take(self) -> tuple[list[Alert], list[ResponseFact]]:
        """Everything collected so far, leaving empty lists for what comes next."""
        taken = (self.alerts, self.responses)
        self.alerts, self.responses = [], []
        return taken


@dataclass
class PartitionState:
    """What a clean partition's marker holds, in memory."""

    clock: EventClock
    offset: int = -1  # last input offset whose effects are all in state
    sources: dict[str, int] = field(default_factory=dict)  # raw "topic|partition" → offset
    saved_clock: str | None = None
    dirty: bool = False
    # Highest watermark heard per raw partition (ms, -1 unknown; streams/watermark.combine).
    raw_watermarks: list[int] = field(default_factory=list)
    raw_caught_up: list[bool] = field(default_factory=list)
    # The rules' clock (SPEC §7.1): the same watermark over only the raw partitions of the
    # sources the SLA and follow-up rules read (``rule_bits``), which drives the engine.
    rule_clock: EventClock | None = None
    rule_bits: tuple[int, ...] = ()
    saved_rule_clock: str | None = None

    def rule_caught_up(self) -> bool:
        return all(self.raw_caught_up[i] for i in self.rule_bits)

    def follow(
        self, headers: RecordHeaders, wall: float | None, now: datetime | None
    ) -> datetime | None:
        """Take a record's watermark (``streams.watermark.combine``) into the partition clock,
        never past ``now`` (the wall clock); the clock after it, None when it did not move.

        The clock follows the sources' watermark, not the event's own time: an event from a
        fast source must not fire other keys' deadlines early, nor one stamped ahead of the
        wall clock (within the accepted skew) anyone's deadline before it is due."""
        if headers.watermark is None:
            return None
        watermark = combine(
            self.raw_watermarks, self.raw_caught_up, headers.watermark, headers.cover
        )
        if watermark is None:
            return None
        return self.clock.observe(watermark, wall, not_after=now)

    def follow_rules(self, wall: float | None, now: datetime | None) -> datetime | None:
        """The rules' clock after the watermarks just taken in (``follow``): the lowest of the
        rule sources' partitions while any is behind, else the highest, never past ``now``; a
        slow EHR, billing, phone or survey feed neither holds it back nor moves it on."""
        if self.rule_clock is None:
            return None
        marks = [self.raw_watermarks[i] for i in self.rule_bits]
        if not marks or min(marks) < 0:
            return None
        low = max(marks) if self.rule_caught_up() else min(marks)
        return self.rule_clock.observe(datetime.fromtimestamp(low / 1000, UTC), wall, not_after=now)

    def restore(self, saved: Any, raw_count: int) -> None:
        """Take the marker's values; ``ValueError``/``TypeError`` when it is not one the
        processors wrote (the caller then starts the partition afresh)."""
        if not isinstance(saved, dict):
            raise TypeError("a partition marker is an object")
        snapshot = saved.get("s")
        offset = int(saved.get("o", -1))
        sources = saved.get("src") or {}
        if not isinstance(sources, dict):
            raise TypeError("a marker's raw positions are an object")
        sources = {str(k): int(v) for k, v in sources.items()}
        marks, done = saved.get("w"), saved.get("wc")
        self.clock.restore(snapshot)
        if self.rule_clock is not None:
            # A marker from before rule clocks: the partition clock is where the rules stood.
            rule_snapshot = saved.get("rs", snapshot)
            self.rule_clock.restore(rule_snapshot)
            self.saved_rule_clock = rule_snapshot
        self.offset, self.sources, self.saved_clock = offset, sources, snapshot
        if isinstance(marks, list) and isinstance(done, list) and len(marks) == raw_count:
            if len(done) != raw_count:
                raise ValueError("a marker's caught-up flags do not match its watermarks")
            self.raw_watermarks = [int(m) for m in marks]
            self.raw_caught_up = [bool(c) for c in done]


class Processors:
    """The processors agent and its idle-clock timer, with their dependencies passed in."""

    name = "processors"

    def __init__(self, rt: Runtime, delivery: DeliveringProducer) -> None:
        self.rt = rt
        self.loop = loop = rt.loop
        self.settings = settings = rt.settings
        self.delivery = delivery
        self.feed = loop.feed(
            "processors", [settings.topics.clean], settings.sink_batch_size,
            settings.sink_flush_seconds,
        )  # fmt: skip
        app_id, by = settings.app_id, frozenset([settings.topics.clean])
        self.practices = practices = load_practices(settings)
        machines = build_machines(practices)
        # The machines' states are bytes (portal_pulse.engine), in memory as in the changelog;
        # the live figures and partition markers are JSON.
        self.stores = {
            m.name: ChangelogStore(
                loop.table(StateTable(app_id, f"{m.name}-{STATE_TABLE_SUFFIX}", by, STATE_VALUES)),
                delivery,
            )
            for m in machines
        }
        self.live_store = ChangelogStore(loop.table(StateTable(app_id, "live-state", by)), delivery)
        self.markers = ChangelogStore(
            loop.table(StateTable(app_id, "clocks", by, MARKER_VALUES)), delivery
        )
        self.out = CollectingOutputs()
        self.live = LiveMetrics(
            self.live_store, lambda pid, at: practices.for_practice(pid).calendar.local_date(at)
        )
        self.engine = Engine(
            machines,
            self.stores,  # type: ignore[arg-type]
            self.out,
            on_change=self.live.on_state_change,
            horizon=timedelta(days=settings.correction_horizon_days),
            holds={
                "sla": timedelta(seconds=settings.sla_alert_hold_seconds),
                "followups": timedelta(seconds=settings.followup_alert_hold_seconds),
            },
        )
        self.late = LateEvents(rt.metrics)
        self.checkpoint = Checkpoint(
            delivery, [*self.stores.values(), self.live_store], [self.markers]
        )
        self.partitions: dict[int, PartitionState] = {}
        self.quiet = False  # set by ``quiesce``: the timer sends nothing
        index = raw_index(settings.topics.raw.values(), settings.raw_partitions)
        self.raw_count = len(index)
        # Which sources the rules read, from the catalogue (SPEC §2's source column): their
        # raw partitions alone move the rules' clock.
        rule_topics = {settings.topics.raw[source_of(t)] for m in machines for t in m.event_types}
        self.rule_bits = tuple(sorted(i for tp, i in index.items() if tp.topic in rule_topics))
        # The raw partitions a clean record's ``pp-src`` header may name.
        self.raw_sources = frozenset(f"{tp.topic}|{tp.partition}" for tp in index)
        # The process role writes no rows: the sink role makes them from the clean topic.
        self.events_sink: ClickHouseTableSink | None = (
            events_table_sink(rt) if rt.clickhouse is not None else None
        )
        self.duplicates_skipped = 0
        self.reread_skipped = 0
        self.copy_samples: list[str] = []
        self.processing_errors = 0
        self.bad_markers = 0
        self.dead_letter_reasons: dict[str, int] = {}
        # Alerts sent and not yet confirmed delivered: (kind, transition, deadline passed at).
        self._unconfirmed: list[tuple[str, str, float | None]] = []
        self._last_published: dict[int, float] = {}

    # -- per partition --------------------------------------------------------------------------

    def partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            # First touch since assignment (tables recovered): rebuild this partition's
            # derived live figures, deadline index (which reports the last logins to the live
            # figures) and marker.
            self.live.rebuild(partition)
            self.engine.rebuild([partition], keep_others=True)
            state = self._fresh_partition()
            saved = self.markers.get(str(partition))
            if saved:
                try:
                    state.restore(saved, self.raw_count)
                except (TypeError, ValueError, OverflowError) as exc:
                    # Not a marker the processors wrote: start afresh (every record after the
                    # committed offset is read again; keys' stamps skip what they hold).
                    self.processing_errors += 1
                    self.bad_markers += 1
                    logger.error(
                        "processors: partition %d's marker does not parse (%s): ignored",
                        partition, type(exc).__name__,
                    )  # fmt: skip
                    state = self._fresh_partition()
                    state.dirty = True  # write a good marker at the next checkpoint
            self.partitions[partition] = state
        return state

    def _fresh_partition(self) -> PartitionState:
        n = self.raw_count
        return PartitionState(
            EventClock(self.settings.idle_grace_seconds),
            raw_watermarks=[-1] * n,
            raw_caught_up=[False] * n,
            rule_clock=EventClock(self.settings.idle_grace_seconds),
            rule_bits=self.rule_bits,
        )

    def _mark(self, partition: int, state: PartitionState) -> None:
        snap = _second(state.clock.snapshot())
        rule_snap = _second(state.rule_clock.snapshot()) if state.rule_clock else None
        if not state.dirty and snap == state.saved_clock and rule_snap == state.saved_rule_clock:
            return
        value = {
            "p": partition,
            "s": snap,
            "rs": rule_snap,
            "o": state.offset,
            "src": state.sources,
            "w": state.raw_watermarks,
            "wc": [int(c) for c in state.raw_caught_up],
        }
        self.markers.put(str(partition), value, partition)
        state.saved_clock, state.saved_rule_clock, state.dirty = snap, rule_snap, False

    # -- per event --------------------------------------------------------------------------------

    def process(self, msg: Message) -> list[Any] | None:
        """Fold one clean record into the machines; its ``events`` row, or None.

        Everything read from the record (headers, value) is parsed inside the guard: a record
        that does not parse is dead-lettered and the stream goes on (SPEC §9)."""
        p: int = msg.partition()  # type: ignore[assignment]
        offset: int = msg.offset()  # type: ignore[assignment]
        state = self.partition(p)
        if offset <= state.offset:
            self.reread_skipped += 1
            return None  # its effects are all in the restored state already
        state.offset, state.dirty = offset, True
        value = msg.value()
        try:
            headers = read_headers(msg.headers(), self.raw_sources)
        except BadHeader as exc:
            self._dead_letter(msg, value, "bad_header", str(exc), exc.header)
            return None
        if headers.watermark is not None:
            wall, wall_now = time.monotonic(), datetime.now(UTC)
            state.follow(headers, wall, wall_now)
            moved = state.follow_rules(wall, wall_now)
            if moved is not None:
                self.engine.advance(moved, p)
        if not value:
            if headers.watermark is None:  # empty, and no watermark: not a control record
                self._dead_letter(msg, value, "bad_internal_record", "empty clean record")
            return None  # a watermark control record
        source = headers.source
        where, raw_offset = source if source is not None else ("", -1)
        if source is not None:
            if raw_offset <= state.sources.get(where, -1):
                self.duplicates_skipped += 1  # a second copy of a raw record: ingest re-read it
                if len(self.copy_samples) < 3:
                    self.copy_samples.append(
                        f"{p}@{offset} from {where}@{raw_offset} (seen {state.sources[where]})"
                    )
                return None
            state.sources[where] = raw_offset
        try:
            clean = clean_event_from_record(self.rt.clean_codec.decode_record(value))
        except Exception as exc:  # not a clean event: dead-letter it
            self._dead_letter(
                msg, value, "bad_internal_record", f"not a clean event: {type(exc).__name__}"
            )
            return None
        try:
            self.engine.on_event(clean, p, offset)
            self.late.observe(
                clean, self.engine, state.rule_clock.now() if state.rule_clock else None
            )
            self.live.apply(clean, p, offset)
            if self.events_sink is None:
                return None
            return [*event_row(clean), where, raw_offset]
        except Exception as exc:  # one bad record must not stop the stream: dead-letter it
            self._dead_letter(
                msg, value, "processing_error", f"processing failed: {type(exc).__name__}"
            )
            return None

    def _dead_letter(
        self, msg: Message, value: bytes | None, reason: str, detail: str, field: str | None = None
    ) -> None:
        self.processing_errors += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        # The position and reason are logged, never the value (PHI).
        logger.error(
            "processors: dead-lettering %s:%s@%d: %s (%s)", topic, partition, offset, reason, detail
        )
        record = Rejected(reason, detail, field).dead_letter(
            value or b"",
            topic,
            partition,
            offset,
            datetime.now(UTC),  # type: ignore[arg-type]
        )
        self.delivery.send(
            self.settings.topics.dead_letter, self.rt.dead_letter_codec.encode_record(record)
        )

    def send_outputs(self) -> None:
        names = self.settings.topics
        alerts, responses = self.out.take()
        now = time.time()
        for alert in alerts:
            self.delivery.send(
                names.alerts, alert_to_bytes(self.rt.alert_codec, alert), alert.alert_id.encode()
            )
            if alert.withdrawn_at is not None:  # a correction: no deadline passed for it
                self._unconfirmed.append((alert.kind, "withdrawn", None))
                continue
            if alert.resolved_at is not None:
                self._unconfirmed.append((alert.kind, "resolved", None))
                continue
            # When the clock passed the deadline, in wall time: the deadline itself when it is
            # recent (a live clock), else now (a backlog read after the fact).
            due = alert.due_at.timestamp()
            self._unconfirmed.append((alert.kind, "raised", due if 0 <= now - due < 3600 else now))
        for fact in responses:
            self.delivery.send(names.responses, response_to_bytes(fact), fact.response_id.encode())

    def confirm_outputs(self) -> None:
        """The checkpoint delivered what ``send_outputs`` sent: count it and its delay."""
        if not self._unconfirmed:
            return
        metrics, now = self.rt.metrics, time.time()
        for kind, transition, passed_at in self._unconfirmed:
            metrics.alerts.labels(kind, transition).inc()
            if passed_at is not None:
                metrics.alert_emit_delay.observe(max(0.0, now - passed_at))
        self._unconfirmed.clear()

    # -- the agent, the timer, rebalances ---------------------------------------------------------

    async def run(self) -> None:
        async for taken in self.feed.batches():
            async with self.checkpoint.batch():
                await self.run_batch(self.feed.current(taken))

    async def run_batch(self, records: list[Message]) -> None:
        """One batch, checkpoint included (the caller holds the checkpoint lock)."""
        if not records:
            return
        batch = Batch()
        touched: set[int] = set()
        skipped = (self.reread_skipped, self.duplicates_skipped)
        process = self.process
        for msg in records:
            row = process(msg)
            p: int = msg.partition()  # type: ignore[assignment]
            touched.add(p)
            if row is not None:
                batch.add(row, msg.topic(), p, msg.offset())  # type: ignore[arg-type]
        self.send_outputs()
        self.late.end_batch()
        for p in touched:
            self._mark(p, self.partitions[p])
        reread = self.reread_skipped - skipped[0]
        copies = self.duplicates_skipped - skipped[1]
        if reread or copies:
            logger.info(
                "processors: %d of %d records read again after a restart or rebalance "
                "(%d already handled, %d second copies of a raw record%s): skipped",
                reread + copies, len(records), reread, copies,
                f", e.g. {'; '.join(self.copy_samples)}" if self.copy_samples else "",
            )  # fmt: skip
            self.copy_samples.clear()
        if self.events_sink is not None:
            await asyncio.get_running_loop().run_in_executor(
                self.rt.db_executor, self.events_sink.write, batch
            )
        await self.checkpoint.complete()
        self.feed.done(records)
        self.confirm_outputs()

    async def tick(self) -> None:
        loop = self.loop
        if not loop.ready or self.checkpoint.abandoned or self.quiet:
            return
        wall, wall_now = time.monotonic(), datetime.now(UTC)
        clean = self.settings.topics.clean
        try:
            async with self.checkpoint.batch():
                if not self.quiet:
                    self._tick(wall, wall_now, clean)
                    self.send_outputs()
                    await self.checkpoint.complete()
                    self.confirm_outputs()
        except CheckpointAbandoned:
            return  # a batch was cut short by a stop: nothing more is written

    def _tick(self, wall: float, wall_now: datetime, clean: str) -> None:
        """Idle clocks, deadlines and live figures of every assigned clean partition."""
        loop = self.loop
        for tp in loop.assignment:
            if tp.topic != clean:
                continue
            state = self.partition(tp.partition)
            # Only a caught-up partition's clock moves on with the wall clock while idle,
            # and only once every raw partition's worker has said it is caught up too: a
            # failover or a slow worker is not an idle stream.
            here = loop.caught_up(tp)
            idle = here and all(state.raw_caught_up)
            now = state.clock.now(wall, idle_allowed=idle, not_after=wall_now)
            if now is None:
                continue
            # The rules' clock idles on when their own sources are caught up, whatever the
            # other feeds do (SPEC §7.1).
            rule_idle = here and state.rule_caught_up()
            rule_now = (
                state.rule_clock.now(wall, idle_allowed=rule_idle, not_after=wall_now)
                if state.rule_clock is not None
                else None
            )
            if rule_idle and rule_now is not None:
                self.engine.advance(rule_now, tp.partition)
            if idle or rule_idle:
                self._mark(tp.partition, state)
            if wall - self._last_published.get(tp.partition, 0.0) >= 1.0:
                self._last_published[tp.partition] = wall
                for row in self.live.drain(tp.partition, now):
                    self.delivery.send(
                        self.settings.topics.live_metrics,
                        live_to_bytes(row),
                        row.practice_id.encode(),
                    )

    async def quiesce(self) -> None:
        """No timer output from now on (``--exit-when-idle`` is about to stop the worker):
        waits for a tick in flight, whose outputs are then delivered."""
        async with self.checkpoint.lock:
            self.quiet = True

    def resume(self) -> None:
        self.quiet = False

    async def on_revoked(self, revoked: frozenset[TP]) -> None:
        # Wait for a batch in flight to finish its checkpoint, then forget the partitions.
        async with self.checkpoint.lock:
            self.partitions.clear()
            if self.events_sink is not None:
                # On the database thread, after any insert still running there: a batch cut
                # short (a stop) releases the lock while its insert goes on, and positions
                # forgotten between that insert's read-back and its skip wrote rows twice.
                await asyncio.get_running_loop().run_in_executor(
                    self.rt.db_executor, self.events_sink.forget
                )
            self._unconfirmed.clear()

    async def on_assigned(self, assigned: frozenset[TP]) -> None:
        async with self.checkpoint.lock:
            self.partitions.clear()
            # Every partition's deadline index and live figures are rebuilt on first touch
            # from the restored tables (``partition``).
            self.engine.rebuild([], keep_others=False)


def register(app: Any, rt: Runtime) -> Processors:
    """The processors agent on its feed, its idle-clock timer on the app."""
    delivery = DeliveringProducer(rt.settings, rt.bootstrap)
    rt.producers.append(delivery)
    processors = Processors(rt, delivery)
    rt.loop.on_assigned.append(processors.on_assigned)
    rt.loop.on_revoked.append(processors.on_revoked)
    app.timer(rt.settings.tick_interval_seconds, name="processors-tick")(processors.tick)
    return processors
