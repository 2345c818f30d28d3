"""Kafka → ClickHouse: one agent per table, batched, offsets acknowledged only after the write.

(The ``events`` table is written by the processors agent itself, in the same batches.)

A batch's insert carries a deduplication token made from the offsets it covers, so a batch
re-read after a crash or a lost acknowledgement adds no rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust

from sinks.batching import Batch, ClickHouseTableSink, lost_ack_fault
from sinks.rows import TABLES
from streams.app import Runtime
from streams.codecs import alert_from_bytes, live_from_bytes, response_from_bytes

__all__ = ["register"]

logger = logging.getLogger(__name__)

RowOf = Callable[[bytes], list[Any]]


def register(app: faust.App, rt: Runtime) -> None:
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
    for name, topic, table, decode in specs:
        spec = TABLES[table]
        sink = ClickHouseTableSink(rt.clickhouse, table, spec.columns, after_insert=fault)
        rt.sinks[table] = sink
        _register_sink(
            app,
            rt,
            name,
            topic,
            sink,
            lambda b, row=spec.row, decode=decode: row(decode(b)),
            settings.sink_batch_size,
            settings.sink_flush_seconds,
        )


def _register_sink(
    app: faust.App,
    rt: Runtime,
    name: str,
    topic: faust.TopicT,
    sink: ClickHouseTableSink,
    row_of: RowOf,
    batch_size: int,
    within: float,
) -> None:
    progress = rt.progress_of(name, topic.topics)

    async def agent(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.noack_take(batch_size, within=within):
            batch = Batch()
            for event in events:
                msg = event.message
                if not event.value:
                    continue  # control record (watermark), not data
                try:
                    row = row_of(event.value)
                except Exception as exc:  # our own topics: a bad record is a bug, not input
                    logger.error(
                        "%s: skipping undecodable record %s@%d: %s", name, msg.tp, msg.offset, exc
                    )
                    continue
                batch.add(row, msg.topic, msg.partition, msg.offset)
            await loop.run_in_executor(rt.db_executor, sink.write, batch)
            for event in events:
                await stream.ack(event)
                progress.done(event.message.tp, event.message.offset)

    agent.__name__ = name.replace("-", "_")
    app.agent(topic, name=name)(agent)
