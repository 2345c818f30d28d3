"""Kafka → ClickHouse: one agent per table, batched, offsets acknowledged only after the write.

In the ``all`` role the ``events`` table is written by the processors agent itself, in the same
batches. In the ``sink`` role (portal_pulse.roles) ``sink-events`` makes the same rows from the
clean topic, applying the processors' rule for second copies of a raw record (see
``EventsSinkAgent``).

A batch's insert carries a deduplication token made from the offsets it covers, and the sink
skips positions it has already written, so a batch re-read after a crash, a rebalance or a lost
acknowledgement adds no rows. A failing insert is retried with back-off until it succeeds;
nothing is acknowledged meanwhile.

The topics are the pipeline's own, but their records are parsed as input (SPEC §9): a record
that does not decode, or decodes to values its table cannot hold (an insert refused for them
would be retried for ever), is dead-lettered as ``bad_internal_record`` and the batch goes on;
the dead letters are delivered before the batch is acknowledged. The dead-letter sink only
skips and counts such a record: a dead letter about its own topic could go round in a loop. The
events sink skips a clean record the processors dead-letter (``bad_header`` and the rest).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from typing import Any

from portal_pulse.ingest import Rejected
from portal_pulse.reports.monthly_rows import FEEDING_TABLES
from portal_pulse.reports.rollup import refeed_events_tail
from schemas.serializer import clean_event_from_record
from sinks.batching import Batch, ClickHouseTableSink, SinkStopped, lost_ack_fault
from sinks.rows import EVENT_SOURCE_COLUMNS, TABLES, event_row
from streams.codecs import alert_from_bytes, live_from_bytes, response_from_bytes
from streams.delivery import DeliveringProducer
from streams.records import TP, Message
from streams.runtime import Runtime
from streams.watermark import BadHeader, raw_index, read_headers

__all__ = ["DeadLetters", "EventsSinkAgent", "TableSinkAgent", "check_record", "register"]

logger = logging.getLogger(__name__)

RowOf = Callable[[bytes], list[Any]]

# What the tables' columns hold (sinks/migrations): UInt32 counts (UInt16 partition), DateTime64
# instants with a UInt64 version made from them (so none before 1970), Date days.
_INT_LIMITS = {"partition": 2**16}
_UINT32 = 2**32
_YEARS = range(1970, 2300)
_DAYS = range(1970, 2149)


def _fits(name: str, kind: Any, value: Any) -> bool:
    """Whether ``value`` is of annotation ``kind`` and within its column's range."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_fits(name, k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        limit = _INT_LIMITS.get(name, _UINT32)
        return type(value) is int and 0 <= value < limit
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is datetime:
        return isinstance(value, datetime) and value.tzinfo is not None and value.year in _YEARS
    if kind is date:
        return type(value) is date and value.year in _DAYS
    if typing.get_origin(kind) is dict:
        key_kind, value_kind = typing.get_args(kind)
        return isinstance(value, dict) and all(
            _fits(name, key_kind, k) and _fits(name, value_kind, v) for k, v in value.items()
        )
    return True


def check_record(record: Any) -> Any:
    """``record`` (an alert, response fact or live row) as decoded, when its table can hold
    every field; ``ValueError`` naming the first field that it cannot."""
    if is_dataclass(record) and not isinstance(record, type):
        for name, kind in _field_kinds(type(record)):
            if not _fits(name, kind, getattr(record, name)):
                raise ValueError(f"field {name} out of its column's type or range")
    return record


@functools.cache
def _field_kinds(cls: type) -> tuple[tuple[str, Any], ...]:
    """Each field's annotation, resolved once per class (``get_type_hints`` evaluates the
    annotations again at every call: 13 % of the worker when it ran per record)."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in fields(cls))


class DeadLetters:
    """The sinks' dead letters: sent as records fail, delivered before the batch is acked."""

    def __init__(self, rt: Runtime, delivery: DeliveringProducer) -> None:
        self.rt = rt
        self.delivery = delivery
        self.pending = 0
        self.reasons: dict[str, int] = {}

    def send(self, agent: str, msg: Message, value: bytes | None, reason: str, detail: str) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        # The position and reason are logged, never the value (it may hold PHI).
        logger.error(
            "%s: dead-lettering %s:%s@%d: %s (%s)", agent, topic, partition, offset, reason, detail
        )
        record = Rejected(reason, detail).dead_letter(
            value or b"",
            topic,
            partition,
            offset,
            datetime.now(UTC),  # type: ignore[arg-type]
        )
        self.delivery.send(
            self.rt.settings.topics.dead_letter, self.rt.dead_letter_codec.encode_record(record)
        )
        self.pending += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    async def flush(self) -> None:
        if self.pending:
            await self.delivery.flush()
            self.pending = 0


class TableSinkAgent:
    """One topic → one table."""

    def __init__(
        self, rt: Runtime, name: str, topic: str, sink: ClickHouseTableSink,
        row_of: RowOf, dead_letters: DeadLetters | None = None,
    ) -> None:  # fmt: skip
        self.rt = rt
        self.name = name
        self.topic = topic
        self.sink = sink
        self.row_of = row_of
        self.dead_letters = dead_letters  # None: skip and count a bad record (dead-letter sink)
        settings = rt.settings
        self.feed = rt.loop.feed(
            name, [topic], settings.sink_batch_size, settings.sink_flush_seconds
        )
        # Held from taking a batch's records to their commit: a revocation waits for it.
        self.lock = asyncio.Lock()
        self.skipped = 0
        rt.loop.on_assigned.append(self.on_assigned)
        rt.loop.on_revoked.append(self.on_revoked)

    def batch_of(self, records: list[Message]) -> Batch:
        batch = Batch()
        for msg in records:
            value = msg.value()
            try:  # the pipeline's own topic, but a record that does not parse stops nothing
                if not value:
                    raise ValueError("empty record")  # only the clean topic has control records
                row = self.row_of(value)
            except Exception as exc:
                self.skipped += 1
                detail = f"not a record of this topic: {type(exc).__name__}"
                if self.dead_letters is not None:
                    self.dead_letters.send(self.name, msg, value, "bad_internal_record", detail)
                else:
                    logger.error(
                        "%s: skipping a record that does not parse %s:%s@%d: %s",
                        self.name, msg.topic(), msg.partition(), msg.offset(), detail,
                    )  # fmt: skip
                continue
            batch.add(row, msg.topic(), msg.partition(), msg.offset())  # type: ignore[arg-type]
        return batch

    async def run(self) -> None:
        feed = self.feed
        async for taken in feed.batches():
            async with self.lock:
                records = feed.current(taken)
                if not records:
                    continue
                await self.write(records)
                if self.dead_letters is not None:
                    await self.dead_letters.flush()
                feed.done(records)

    async def write(self, records: list[Message]) -> None:
        batch = self.batch_of(records)
        await asyncio.get_running_loop().run_in_executor(
            self.rt.db_executor, self.sink.write, batch
        )

    async def on_assigned(self, assigned: frozenset[TP]) -> None:
        # Another sink may have written these partitions meanwhile: read positions again. On
        # the database thread, after any insert still running there (a cut-short batch's).
        async with self.lock:
            await asyncio.get_running_loop().run_in_executor(self.rt.db_executor, self.sink.forget)

    async def on_revoked(self, revoked: frozenset[TP]) -> None:
        async with self.lock:  # a batch in flight finishes first
            pass


class EventsSinkAgent(TableSinkAgent):
    """Clean topic → ``events`` (sink role): the rows the processors write in the ``all`` role.

    Same columns, same clean-topic positions (``kafka_*``, dedup tokens, positions already
    written skipped), and the processors' rule in the processors' order: a record at or below
    the partition's written position was handled before; a watermark control record (empty
    value) is no event; a record whose raw position (``pp-src`` header) is at or below the
    highest raw offset already taken from that raw source in this clean partition is a second
    copy of a raw record (ingest re-read it after a crash) and is skipped. The highest raw
    offsets are read back from ``events.raw_source``/``raw_offset`` when the sink meets the
    topic, so the rule survives the sink's own restarts. Everything that touches ClickHouse or
    that memory runs on the database thread, one batch at a time.
    """

    def __init__(self, rt: Runtime, topic: str, sink: ClickHouseTableSink) -> None:
        super().__init__(rt, "sink-events", topic, sink, self._row_of)
        # clean partition → raw "topic|partition" → highest raw offset taken
        self.sources: dict[int, dict[str, int]] = {}
        index = raw_index(rt.settings.topics.raw.values(), rt.settings.raw_partitions)
        self.raw_sources = frozenset(f"{tp.topic}|{tp.partition}" for tp in index)
        self.bad_skipped = 0  # records the processors dead-letter: no events row
        self._loaded: set[str] = set()
        self._stale = False
        self.copies_skipped = 0
        self.reread_skipped = 0

    def _row_of(self, value: bytes) -> list[Any]:
        return event_row(clean_event_from_record(self.rt.clean_codec.decode_record(value)))

    async def on_assigned(self, assigned: frozenset[TP]) -> None:
        # Positions and raw offsets are read again on the database thread before the next batch.
        async with self.lock:
            self._stale = True

    async def write(self, records: list[Message]) -> None:
        await asyncio.get_running_loop().run_in_executor(
            self.rt.db_executor, self.write_now, records
        )

    def _load(self, topic: str) -> None:
        """Written positions and highest raw offsets of ``topic``, retried like an insert."""
        delay = self.sink.backoff
        while True:
            try:
                self.sink.load_positions(topic)
                result = self.sink.client.query(
                    "SELECT kafka_partition, raw_source, max(raw_offset) FROM events "
                    "WHERE kafka_topic = {t:String} AND raw_offset >= 0 "
                    "GROUP BY kafka_partition, raw_source",
                    parameters={"t": topic},
                )
            except Exception as exc:
                logger.warning(
                    "%s: reading written positions failed: %s; retrying in %.1fs",
                    self.name, f"{type(exc).__name__}: {exc}"[:300], delay,
                )  # fmt: skip
                if self.sink.wait_stopped(delay):
                    raise SinkStopped("stopped before reading the written positions") from exc
                delay = min(delay * 2, self.sink.max_backoff)
                continue
            for partition, where, offset in result.result_rows:
                seen = self.sources.setdefault(int(partition), {})
                seen[str(where)] = max(seen.get(str(where), -1), int(offset))
            self._loaded.add(topic)
            return

    def write_now(self, events: list[Message]) -> int:
        """Rows of ``events`` (in offset order), written; on the database thread."""
        if self._stale:
            self._stale = False
            self.sources.clear()
            self._loaded.clear()
            self.sink.forget()
        batch = Batch()
        skipped = (self.reread_skipped, self.copies_skipped)
        for msg in events:
            topic, p, offset = msg.topic(), msg.partition(), msg.offset()
            if topic not in self._loaded:
                self._load(topic)
            if self.sink.is_written(topic, p, offset):
                self.reread_skipped += 1
                continue  # its row (or its verdict) is in ClickHouse already
            try:
                source = read_headers(msg.headers(), self.raw_sources).source
            except BadHeader:  # the processors dead-letter it (bad_header): no events row
                self.bad_skipped += 1
                continue
            value = msg.value()
            if not value:
                continue  # a watermark control record (or one the processors dead-letter)
            where, raw_offset = source if source is not None else ("", -1)
            if source is not None:
                seen = self.sources.setdefault(p, {})
                if raw_offset <= seen.get(where, -1):
                    self.copies_skipped += 1  # a second copy of a raw record: ingest re-read it
                    continue
                seen[where] = raw_offset
            try:
                row = self._row_of(value)
            except Exception as exc:  # the processors dead-letter it: no events row
                self.skipped += 1
                logger.error(
                    "%s: skipping a record that does not parse %s:%s@%d: %s",
                    self.name, topic, p, offset, type(exc).__name__,
                )  # fmt: skip
                continue
            batch.add([*row, where, raw_offset], topic, p, offset)
        reread, copies = self.reread_skipped - skipped[0], self.copies_skipped - skipped[1]
        if reread or copies:
            logger.info(
                "%s: %d of %d records already written (read again) and %d second copies of a "
                "raw record: skipped",
                self.name, reread, len(events), copies,
            )  # fmt: skip
        return self.sink.write(batch)


def _marker(rt: Runtime, table: str, columns: Sequence[str]) -> Callable[[Batch], None] | None:
    """Marks the practices of a batch stale in the stored monthly rows, for the tables whose
    rows change monthly figures."""
    if rt.monthly_rows is None or table not in FEEDING_TABLES:
        return None
    return rt.monthly_rows.marker(columns)


def events_table_sink(rt: Runtime) -> ClickHouseTableSink:
    """The ``events`` writer, with clean-topic and raw positions: the processors' in the all
    role, the sink-events agent's in the sink role."""
    settings = rt.settings
    rate = settings.sink_fault_rate
    columns = (*TABLES["events"].columns, *EVENT_SOURCE_COLUMNS)
    sink = ClickHouseTableSink(
        rt.clickhouse,
        "events",
        columns,
        position_columns=True,
        # What is committed was written whole; above it an insert may have been cut short.
        floors=rt.loop.committed_of,
        before_insert=_marker(rt, "events", columns),
        max_backoff=settings.sink_retry_max_seconds,
        after_insert=lost_ack_fault(rate) if rate > 0 else None,
        # Repairs the rollup if a crash came between an insert's events and its rollup rows.
        on_positions=lambda topic, highs: rt.metrics.rollup_refed.inc(
            refeed_events_tail(rt.clickhouse, topic, highs, settings.sink_batch_size)
        ),
    )
    rt.sinks["events"] = sink
    return sink


def register(rt: Runtime) -> list[TableSinkAgent]:
    settings = rt.settings
    topics = settings.topics
    # agent name, topic, table, and how a record's bytes become the table's record
    specs: list[tuple[str, str, str, Callable[[bytes], Any]]] = [
        (
            "sink-dead-letters",
            topics.dead_letter,
            "dead_letters",
            rt.dead_letter_codec.decode_record,
        ),
        (
            "sink-alerts",
            topics.alerts,
            "alerts",
            lambda b: check_record(alert_from_bytes(rt.alert_codec, b)),
        ),
        (
            "sink-responses",
            topics.responses,
            "message_responses",
            lambda b: check_record(response_from_bytes(b)),
        ),
        (
            "sink-live-metrics",
            topics.live_metrics,
            "live_metrics",
            lambda b: check_record(live_from_bytes(b)),
        ),
    ]
    fault = lost_ack_fault(settings.sink_fault_rate) if settings.sink_fault_rate > 0 else None
    delivery = DeliveringProducer(settings, rt.bootstrap)
    rt.producers.append(delivery)
    dead_letters = DeadLetters(rt, delivery)
    agents = []
    for name, topic, table, decode in specs:
        spec = TABLES[table]
        sink = ClickHouseTableSink(
            rt.clickhouse,
            table,
            spec.columns,
            max_backoff=settings.sink_retry_max_seconds,
            before_insert=_marker(rt, table, spec.columns),
            after_insert=fault,
        )
        rt.sinks[table] = sink
        agent = TableSinkAgent(
            rt, name, topic, sink, lambda b, row=spec.row, decode=decode: row(decode(b)),
            None if table == "dead_letters" else dead_letters,
        )  # fmt: skip
        agents.append(agent)
    if rt.role == "sink":
        # In the all role the processors write these rows themselves.
        agents.append(EventsSinkAgent(rt, topics.clean, events_table_sink(rt)))
    return agents
