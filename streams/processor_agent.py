"""Clean topic → the keyed state machines → alerts and response facts on their topics.

State lives in changelog-backed tables (a restarted worker carries on). Each source partition
has its own event-time clock; a timer moves the clocks of caught-up, idle partitions with the
wall clock so deadlines fire within about a second when no event arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any

import faust
from faust.types import TP

from portal_pulse.domain.clock import EventClock
from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import Engine
from portal_pulse.pipeline import build_machines, load_practices
from schemas.serializer import clean_event_from_record
from sinks.batching import Batch, ClickHouseTableSink, lost_ack_fault
from sinks.rows import TABLES, event_row
from streams.app import Runtime
from streams.codecs import alert_to_bytes, live_to_bytes, response_to_bytes
from streams.delivery import DeliveringProducer
from streams.watermark import read_header

__all__ = ["CollectingOutputs", "FaustTableStore", "register"]

logger = logging.getLogger(__name__)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class FaustTableStore:
    """A Faust table whose changelog records go out through our producer, partition named.

    Faust restores the table from its changelog topic at start-up as usual; writing the records
    ourselves lets timers change state too, and puts them in the batch that is delivered before
    the inputs are acknowledged.
    """

    def __init__(self, table: faust.Table, delivery: DeliveringProducer) -> None:
        self.table = table
        self.delivery = delivery
        self.topic = table.changelog_topic.get_topic_name()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.table.data.get(key)

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.table.data[key] = value
        self.delivery.send(self.topic, _json(value), _json(key), partition=partition)

    def delete(self, key: str, partition: int) -> None:
        if self.table.data.pop(key, None) is not None:
            self.delivery.send_tombstone(self.topic, _json(key), partition)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.table.data.items())

    def __len__(self) -> int:
        return len(self.table.data)


class BufferedTableStore(FaustTableStore):
    """Writes the table now but its changelog on ``flush``: for hot keys rewritten per event.

    A crash loses at most the unflushed changes of live counters, which are approximate by
    nature; the exact monthly figures come from ClickHouse.
    """

    def __init__(self, table: faust.Table, delivery: DeliveringProducer) -> None:
        super().__init__(table, delivery)
        self.dirty: dict[str, int] = {}

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.table.data[key] = value
        self.dirty[key] = partition

    def delete(self, key: str, partition: int) -> None:
        self.dirty.pop(key, None)
        super().delete(key, partition)

    def flush(self) -> None:
        for key, partition in self.dirty.items():
            value = self.table.data.get(key)
            if value is not None:
                self.delivery.send(self.topic, _json(value), _json(key), partition=partition)
        self.dirty.clear()


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


def register(app: faust.App, rt: Runtime) -> None:
    topics = rt.topics
    settings = rt.settings
    parts = settings.clean_partitions
    # JSON keys and values: keys read back from the changelog are str, as they were written.
    json_schema = faust.Schema(key_serializer="json", value_serializer="json")
    practices = load_practices(settings)
    machines = build_machines(practices)
    tables = {
        m.name: app.Table(f"{m.name}-state", partitions=parts, schema=json_schema) for m in machines
    }
    clock_table = app.Table("clocks", partitions=parts, schema=json_schema)
    delivery = DeliveringProducer(settings, rt.bootstrap)
    stores = {name: FaustTableStore(t, delivery) for name, t in tables.items()}
    clock_store = FaustTableStore(clock_table, delivery)
    live_store = BufferedTableStore(
        app.Table("live-state", partitions=parts, schema=json_schema), delivery
    )
    live = LiveMetrics(
        live_store, lambda pid, at: practices.for_practice(pid).calendar.local_date(at)
    )
    out = CollectingOutputs()
    engine = Engine(machines, stores, out)
    clocks: dict[int, EventClock] = {}
    indexed: set[int] = set()
    saved_clock: dict[int, str | None] = {}
    progress = rt.progress_of("processors", [settings.topics.clean])

    def clock_for(partition: int) -> EventClock:
        if partition not in indexed:
            # First touch since assignment: rebuild this partition's deadline index and clock.
            engine.rebuild([partition], keep_others=True)
            clock = EventClock(settings.idle_grace_seconds)
            saved = clock_store.get(str(partition))
            clock.restore(saved.get("s") if saved else None)
            clocks[partition] = clock
            indexed.add(partition)
        return clocks[partition]

    names = settings.topics
    fault = lost_ack_fault(settings.sink_fault_rate) if settings.sink_fault_rate > 0 else None
    events_sink = ClickHouseTableSink(
        rt.clickhouse, "events", TABLES["events"].columns, after_insert=fault
    )
    rt.sinks["events"] = events_sink

    async def flush_outputs() -> None:
        # Take the pending outputs before the first await: the agent and the timer both flush,
        # and neither may send or drop what the other collected.
        alerts, responses = out.take()
        for alert in alerts:
            delivery.send(
                names.alerts, alert_to_bytes(rt.alert_codec, alert), alert.alert_id.encode()
            )
        for fact in responses:
            delivery.send(names.responses, response_to_bytes(fact), fact.response_id.encode())
        await delivery.flush()

    def process(event: Any) -> list[Any] | None:
        """Fold one clean record into the machines; its ``events`` row, or None."""
        msg = event.message
        clock = clock_for(msg.partition)
        watermark = read_header(event.headers)
        if watermark is not None:
            # The partition clock follows the sources' watermark, not the event's own time:
            # an event from a fast source must not fire other keys' deadlines early.
            engine.advance(clock.observe(watermark, time.monotonic()), msg.partition)
        if not event.value:  # a watermark control record
            return None
        try:
            clean = clean_event_from_record(rt.clean_codec.decode_record(event.value))
        except Exception as exc:  # our own topic: a bad record is a bug; skip it, loudly
            logger.error(
                "processors: skipping undecodable record %s@%d: %s", msg.tp, msg.offset, exc
            )
            return None
        engine.on_event(clean, msg.partition)
        live.apply(clean, msg.partition)
        return event_row(clean)

    @app.agent(topics.clean, name="processors")
    async def processors(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.noack_take(
            settings.sink_batch_size, within=settings.sink_flush_seconds
        ):
            batch = Batch()
            for event in events:
                row = process(event)
                if row is not None:
                    msg = event.message
                    batch.add(row, msg.topic, msg.partition, msg.offset)
            if len(live_store.dirty) > 1000:
                live_store.flush()
            # Events rows written and outputs delivered before the inputs are acknowledged.
            await loop.run_in_executor(rt.db_executor, events_sink.write, batch)
            await flush_outputs()
            for event in events:
                await stream.ack(event)
                progress.done(event.message.tp, event.message.offset)

    last_published: dict[int, float] = {}

    @app.timer(settings.tick_interval_seconds)
    async def tick() -> None:
        if app.rebalancing:
            return
        wall = time.monotonic()
        for tp in app.consumer.assignment():
            if tp.topic != settings.topics.clean:
                continue
            clock = clock_for(tp.partition)
            # Only a caught-up partition's clock moves on with the wall clock while idle.
            idle = progress.caught_up(app, tp)
            now: datetime | None = clock.now(wall, idle_allowed=idle)
            if now is None:
                continue
            if idle:
                engine.advance(now, tp.partition)
                snap = now.replace(microsecond=0).isoformat()
                if snap != saved_clock.get(tp.partition):
                    clock_store.put(str(tp.partition), {"p": tp.partition, "s": snap}, tp.partition)
                    saved_clock[tp.partition] = snap
            if wall - last_published.get(tp.partition, 0.0) >= 1.0:
                last_published[tp.partition] = wall
                for row in live.drain(tp.partition, now):
                    delivery.send(names.live_metrics, live_to_bytes(row), row.practice_id.encode())
        live_store.flush()
        await flush_outputs()

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: faust.App, assigned: set[TP], **_: Any) -> None:
        indexed.clear()
        clocks.clear()

    processors.engine = engine  # type: ignore[attr-defined]
