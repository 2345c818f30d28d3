"""Raw topics → clean topic (keyed by patient) or dead-letter topic. Never stops on bad input.

Every clean record carries the raw-topic watermark in a header; when all raw partitions are
caught up, a timer sends the final watermark as an empty control record to each clean partition
so the processors' clocks reach the newest event time.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.model import CleanEvent
from schemas.serializer import clean_event_to_record
from streams.app import Runtime
from streams.delivery import DeliveringProducer
from streams.watermark import HEADER, Watermark, header_value

__all__ = ["clean_key", "register"]

logger = logging.getLogger(__name__)


def clean_key(event: CleanEvent) -> bytes:
    """One patient's events share a key, hence a partition, hence an order."""
    return f"{event.practice_id}|{event.patient_pseudonym}".encode()


def register(app: faust.App, rt: Runtime) -> None:
    topics = rt.topics
    raw_names = set(rt.settings.topics.raw.values())
    progress = rt.progress_of("ingest", raw_names)
    stats = {"clean": 0, "dead_letter": 0, "duplicate": 0}
    watermark = Watermark()
    announced: list[datetime | None] = [None]
    wm: datetime | None = None

    def current_watermark() -> datetime | None:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in raw_names]
        return watermark.compute(assigned, lambda tp: progress.caught_up(app, tp))

    out = DeliveringProducer(rt.settings, rt.bootstrap)
    names = rt.settings.topics
    batch_size = rt.settings.sink_batch_size

    # The de-duplication memory survives restarts: every remembered event id is a record in a
    # compacted changelog (partition = the raw partition it came from), evictions are tombstones.
    seen_table = app.Table(
        "dedup",
        partitions=rt.settings.raw_partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )
    seen_topic = seen_table.changelog_topic.get_topic_name()
    dedup = rt.ingestor.dedup
    dedup.on_add = lambda eid, p: out.send(
        seen_topic, str(p).encode(), json.dumps(eid).encode(), partition=p
    )
    dedup.on_evict = lambda eid, p: out.send_tombstone(seen_topic, json.dumps(eid).encode(), p)
    restored = [False]

    def handle(msg: Any, data: bytes) -> None:
        nonlocal wm
        result = rt.ingestor.ingest(data, partition=msg.partition)
        if result is None:
            stats["duplicate"] += 1
        elif isinstance(result, CleanEvent):
            watermark.observe(msg.tp, result.occurred_at)
            stats["clean"] += 1
            if stats["clean"] % 64 == 1:  # recomputed every 64 events: it asks the consumer
                wm = current_watermark()
            value = rt.clean_codec.encode_record(clean_event_to_record(result))
            headers = {HEADER: header_value(wm)} if wm is not None else None
            out.send(names.clean, value, clean_key(result), headers)
        else:
            record = result.dead_letter(
                data, msg.topic, msg.partition, msg.offset, datetime.now(UTC)
            )
            # The reason and position are logged; the raw bytes (PHI) are not.
            logger.warning(
                "dead letter %s:%d@%d: %s (%s)",
                msg.topic, msg.partition, msg.offset, result.reason, result.detail,
            )  # fmt: skip
            key = (result.event_id or "").encode() or None
            out.send(names.dead_letter, rt.dead_letter_codec.encode_record(record), key)
            stats["dead_letter"] += 1

    @app.agent(topics.raw, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(batch_size, within=0.05):
            if not restored[0]:  # first batch since start or rebalance: tables are recovered
                dedup.restore((str(k), int(v or 0)) for k, v in seen_table.data.items())
                restored[0] = True
            for event in events:
                handle(event.message, event.value or b"")
            await out.flush()  # delivered before acknowledged: at least once
            for event in events:
                await stream.ack(event)
                progress.done(event.message.tp, event.message.offset)

    @app.timer(rt.settings.tick_interval_seconds)
    async def announce_watermark() -> None:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in raw_names]
        if app.rebalancing or not assigned:
            return
        if not all(progress.caught_up(app, tp) for tp in assigned):
            return
        wm = current_watermark()
        if wm is None or wm == announced[0]:
            return
        for partition in range(rt.settings.clean_partitions):
            out.send(names.clean, b"", headers={HEADER: header_value(wm)}, partition=partition)
        await out.flush()
        announced[0] = wm

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: faust.App, assigned: set[Any], **_: Any) -> None:
        restored[0] = False

    ingest.stats = stats  # type: ignore[attr-defined]
