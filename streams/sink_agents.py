"""Kafka → ClickHouse: one agent per table, batched, offsets acknowledged only after the write.

(The ``events`` table is written by the processors agent itself, in the same batches.)

A batch's insert carries a deduplication token made from the offsets it covers, and the sink
skips positions it has already written, so a batch re-read after a crash, a rebalance or a lost
acknowledgement adds no rows. A failing insert is retried with back-off until it succeeds;
nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from sinks.batching import Batch, ClickHouseTableSink, lost_ack_fault
from sinks.rows import TABLES
from streams.app import Runtime
from streams.checkpoint import release_and_ack
from streams.codecs import alert_from_bytes, live_from_bytes, response_from_bytes
from streams.ordering import InOrder

__all__ = ["TableSinkAgent", "register"]

logger = logging.getLogger(__name__)

RowOf = Callable[[bytes], list[Any]]


class TableSinkAgent:
    """One topic → one table."""

    def __init__(
        self, app: faust.App, rt: Runtime, name: str, topic: faust.TopicT, sink: ClickHouseTableSink,
        row_of: RowOf,
    ) -> None:  # fmt: skip
        self.app = app
        self.rt = rt
        self.name = name
        self.topic = topic
        self.sink = sink
        self.row_of = row_of
        self.progress = rt.progress_of(name, topic.topics)
        self.skipped = 0
        self.in_order = InOrder(app, name)
        self.in_order.register()

    def batch_of(self, events: list[Any]) -> Batch:
        batch = Batch()
        for event in events:
            msg = event.message
            if not event.value:
                continue  # control record (watermark), not data
            try:
                row = self.row_of(event.value)
            except Exception as exc:  # our own topics: a bad record is a bug, not input
                self.skipped += 1
                logger.error(
                    "%s: skipping undecodable record %s@%d: %s",
                    self.name, msg.tp, msg.offset, type(exc).__name__,
                )  # fmt: skip
                continue
            batch.add(row, msg.topic, msg.partition, msg.offset)
        return batch

    async def run_batches(self, stream: faust.StreamT) -> None:
        settings = self.rt.settings
        async for events in stream.noack_take(
            settings.sink_batch_size, within=settings.sink_flush_seconds
        ):
            with self.rt.batch_in_flight():
                admitted = self.in_order.admit(events)
                batch = self.batch_of(admitted.fresh)
                await self.app.loop.run_in_executor(self.rt.db_executor, self.sink.write, batch)
                await release_and_ack(stream.ack, admitted.to_ack)
            for event in admitted.to_ack:
                self.progress.done(event.message.tp, event.message.offset)
            if admitted.gaps:
                await self.in_order.read_again(admitted.gaps)

    def register(self) -> None:
        self.app.agent(self.topic, name=self.name)(self.run_batches)

        @self.app.on_partitions_assigned.connect
        async def _assigned(app_: faust.App, assigned: set[TP], **_: Any) -> None:
            # Another sink may have written these partitions meanwhile: read positions again.
            self.sink.forget()
            self.in_order.reset()


def register(app: faust.App, rt: Runtime) -> list[TableSinkAgent]:
    topics = rt.topics
    settings = rt.settings
    # agent name, topic, table, and how a record's bytes become the table's record
    specs: list[tuple[str, faust.TopicT, str, Callable[[bytes], Any]]] = [
        (
            "sink-dead-letters",
            topics.dead_letter,
            "dead_letters",
            rt.dead_letter_codec.decode_record,
        ),
        ("sink-alerts", topics.alerts, "alerts", lambda b: alert_from_bytes(rt.alert_codec, b)),
        ("sink-responses", topics.responses, "message_responses", response_from_bytes),
        ("sink-live-metrics", topics.live_metrics, "live_metrics", live_from_bytes),
    ]
    fault = lost_ack_fault(settings.sink_fault_rate) if settings.sink_fault_rate > 0 else None
    agents = []
    for name, topic, table, decode in specs:
        spec = TABLES[table]
        sink = ClickHouseTableSink(
            rt.clickhouse,
            table,
            spec.columns,
            max_backoff=settings.sink_retry_max_seconds,
            after_insert=fault,
        )
        rt.sinks[table] = sink
        agent = TableSinkAgent(
            app, rt, name, topic, sink, lambda b, row=spec.row, decode=decode: row(decode(b))
        )
        agent.register()
        agents.append(agent)
    return agents
