"""A small batching sink: rows gather per table and are written in one insert per flush.

Each batch remembers the Kafka position of every row. Two things make a write exactly-once:

- a retried insert carries the same ``insert_deduplication_token`` (topic/partition/offsets), so
  an insert whose acknowledgement was lost adds nothing when it is sent again;
- the sink knows the highest offset it has written per topic-partition, read back from
  ClickHouse when it first meets the partition (from the table's own ``kafka_*`` columns, or
  from ``sink_positions``), so records read again after a crash or a rebalance are skipped.
  One insert is not atomic: ClickHouse writes a part per table partition (``events`` by month)
  and commits each on its own, so a crash can leave a batch's later offsets written and earlier
  ones not. For a table with ``kafka_*`` columns the sink therefore reads the exact offsets
  written at or above the group's committed offset (``floors``; everything below it was
  written whole before it was committed) and skips exactly those there, not everything up to
  the highest.

Failure policy: an insert is retried with capped exponential back-off until it succeeds or the
sink is stopped (the caller then acknowledges nothing). ``attempts`` bounds it for one-shot
callers such as the offline replay.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = [
    "POSITION_COLUMNS",
    "Batch",
    "ClickHouseTableSink",
    "SinkStopped",
    "SinkWriteError",
    "lost_ack_fault",
]

logger = logging.getLogger(__name__)

POSITION_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset")


class SinkWriteError(RuntimeError):
    """A batch could not be written within its attempts; offsets must not be acknowledged."""


class SinkStopped(RuntimeError):
    """The sink was stopped while a batch was still unwritten; offsets must not be acknowledged."""


@dataclass
class Batch:
    rows: list[list[Any]] = field(default_factory=list)
    sources: list[tuple[str, int, int] | None] = field(default_factory=list)
    positions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def add(
        self, row: list[Any], topic: str | None = None, partition: int = 0, offset: int = -1
    ) -> None:
        self.rows.append(row)
        if topic is None:
            self.sources.append(None)
            return
        self.sources.append((topic, partition, offset))
        key = (topic, partition)
        lo, hi = self.positions.get(key, (offset, offset))
        self.positions[key] = (min(lo, offset), max(hi, offset))

    def token(self, table: str) -> str | None:
        """Deterministic from the source positions; None for batches not read from Kafka."""
        if not self.positions:
            return None
        spans = ",".join(
            f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(self.positions.items())
        )
        return f"{table}|{spans}"

    def unwritten(self, is_written: Callable[[str, int, int], bool]) -> Batch:
        """The rows whose position is not written yet."""
        rest = Batch()
        for row, src in zip(self.rows, self.sources, strict=True):
            if src is None:
                rest.add(row)
            elif not is_written(*src):
                rest.add(row, *src)
        return rest

    def __len__(self) -> int:
        return len(self.rows)


class ClickHouseTableSink:
    """Writes batches to one table, each row at most once per Kafka position."""

    def __init__(
        self,
        client: Client,
        table: str,
        columns: Sequence[str],
        *,
        position_columns: bool = False,
        attempts: int | None = None,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        before_insert: Callable[[Batch], None] | None = None,
        after_insert: Callable[[Batch], None] | None = None,
        on_positions: Callable[[str, dict[int, int]], None] | None = None,
        floors: Callable[[str], Mapping[int, int]] | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.columns = list(columns)
        # True: the table has kafka_topic/partition/offset columns; else sink_positions is used.
        self.position_columns = position_columns
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Called with the rows about to be inserted: what they change is marked before it can
        # have changed (the stored monthly rows, portal_pulse/reports/monthly_rows.py).
        self.before_insert = before_insert
        # Fault hook: raising here simulates a write whose acknowledgement was lost, so the
        # same batch is sent again with the same token.
        self.after_insert = after_insert
        # Called with (topic, partition → highest offset written) each time positions are read
        # back: what ``events`` needs to repair its rollup after a crash (streams/sink_agents).
        self.on_positions = on_positions
        # The group's committed offset per partition of a topic (the consumer loop's): below
        # it every row was written whole; at and above it an insert may have been cut short.
        self.floors = floors
        self.rows_written = 0
        self.rows_skipped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.retrying = False  # the last attempt failed; readiness reports it
        self.on_error: Callable[[str], None] | None = None
        self.on_written: Callable[[int, float], None] | None = None
        self._written: dict[tuple[str, int], int] = {}
        # (topic, partition) → (floor, highest offset read back, offsets written from the floor
        # up to it): where a cut-short insert may have left holes (``load_positions``).
        self._exact: dict[tuple[str, int], tuple[int, int, frozenset[int]]] = {}
        self._known_topics: set[str] = set()
        self._stop = threading.Event()

    def written(self, topic: str, partition: int) -> int:
        """The highest offset of ``topic``'s partition known written (-1: none)."""
        return self._written.get((topic, partition), -1)

    def is_written(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the row of this position is in the table already."""
        exact = self._exact.get((topic, partition))
        if exact is not None and exact[0] <= offset <= exact[1]:
            return offset in exact[2]
        return offset <= self._written.get((topic, partition), -1)

    def wait_stopped(self, seconds: float) -> bool:
        """Sleep ``seconds`` between retries; True at once when stopped."""
        return self._stop.wait(seconds)

    def stop(self) -> None:
        self._stop.set()

    def forget(self, tps: Iterable[tuple[str, int]] | None = None) -> None:
        """Read positions back from ClickHouse again (another sink may have written since). On
        the thread that writes: between an insert's read-back and its skip it would write rows
        twice."""
        if tps is None:
            self._written.clear()
            self._exact.clear()
            self._known_topics.clear()
            return
        for tp in tps:
            self._written.pop(tp, None)
            self._exact.pop(tp, None)
            self._known_topics.discard(tp[0])

    def load_positions(self, topic: str) -> None:
        if self.position_columns:
            # The sink's own table name; the topic is a parameter.
            sql = (
                f"SELECT kafka_partition, max(kafka_offset) FROM {self.table} "  # noqa: S608
                "WHERE kafka_topic = {t:String} GROUP BY kafka_partition"
            )
            params = {"t": topic}
        else:
            sql = (
                "SELECT partition, max(offset) FROM sink_positions "
                "WHERE table_name = {n:String} AND topic = {t:String} GROUP BY partition"
            )
            params = {"n": self.table, "t": topic}
        highs: dict[int, int] = {}
        for partition, offset in self.client.query(sql, parameters=params).result_rows:
            key = (topic, int(partition))
            self._written[key] = max(self._written.get(key, -1), int(offset))
            highs[int(partition)] = self._written[key]
        if self.position_columns and self.floors is not None:
            self._load_exact(topic, highs)
        if self.on_positions is not None and highs:
            self.on_positions(topic, highs)
        self._known_topics.add(topic)

    def _load_exact(self, topic: str, highs: dict[int, int]) -> None:
        """The offsets written between the committed offset and the highest one, per partition
        with both: usually none (a clean hand-over commits what it wrote)."""
        assert self.floors is not None
        floors = {p: f for p, f in self.floors(topic).items() if f <= highs.get(p, -1)}
        if not floors:
            return
        written: dict[int, set[int]] = {p: set() for p in floors}
        rows = self.client.query(
            f"SELECT kafka_partition, kafka_offset FROM {self.table} "  # noqa: S608
            "WHERE kafka_topic = {t:String} AND kafka_offset >= {lo:Int64}",
            parameters={"t": topic, "lo": min(floors.values())},
        ).result_rows
        for partition, offset in rows:
            p, o = int(partition), int(offset)
            if p in floors and o >= floors[p]:
                written[p].add(o)
        for p, floor in floors.items():
            self._exact[(topic, p)] = (floor, highs[p], frozenset(written[p]))
            missing = highs[p] - floor + 1 - len(written[p])
            if missing:
                logger.info(
                    "%s: %s:%d has rows up to offset %d but none for %d offsets from %d "
                    "(records with no row, or an insert cut short): the due ones are written",
                    self.table, topic, p, highs[p], missing, floor,
                )  # fmt: skip

    def write(self, batch: Batch) -> int:
        """Insert the rows not yet written; returns how many were inserted."""
        if not batch.rows:
            return 0
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                written = self._write_once(batch)
            except Exception as exc:
                self.retrying = True
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.on_error is not None:
                    self.on_error(self.table)
                if self.attempts is not None and attempt >= self.attempts:
                    raise SinkWriteError(
                        f"insert into {self.table} failed {attempt} times: {self.last_error}"
                    ) from exc
                logger.warning(
                    "insert into %s failed (attempt %d): %s; retrying in %.1fs",
                    self.table, attempt, self.last_error, delay,
                )  # fmt: skip
                if self._stop.wait(delay):
                    raise SinkStopped(f"stopped with a batch for {self.table} unwritten") from exc
                delay = min(delay * 2, self.max_backoff)
            else:
                if self.retrying:
                    logger.info("insert into %s succeeded after %d attempts", self.table, attempt)
                self.retrying = False
                return written

    def _write_once(self, batch: Batch) -> int:
        started = time.monotonic()
        for topic, _ in batch.positions:
            if topic not in self._known_topics:
                self.load_positions(topic)
        todo = batch.unwritten(self.is_written) if batch.positions else batch
        self.rows_skipped += len(batch) - len(todo)
        if not todo.rows:
            return 0
        rows, columns = todo.rows, self.columns
        if self.position_columns and todo.positions:
            columns = [*self.columns, *POSITION_COLUMNS]
            rows = [
                [*row, *(src if src is not None else ("", -1, -1))]
                for row, src in zip(todo.rows, todo.sources, strict=True)
            ]
        token = todo.token(self.table)
        # A batch inserted again after a crash is skipped by the table's deduplication; its
        # materialized views (the monthly rollup) still get it, in case the crash came between
        # the table's part and theirs. Every rollup collapses a row seen twice.
        settings = (
            {
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            }
            if token
            else {}
        )
        if self.before_insert is not None:
            self.before_insert(todo)
        self.client.insert(self.table, rows, column_names=columns, settings=settings)
        if self.after_insert is not None:
            self.after_insert(todo)
        if todo.positions and not self.position_columns:
            now = datetime.now(UTC)
            self.client.insert(
                "sink_positions",
                [[self.table, t, p, hi, now] for (t, p), (_, hi) in todo.positions.items()],
                column_names=["table_name", "topic", "partition", "offset", "updated_at"],
            )
        for key, (_, hi) in todo.positions.items():
            self._written[key] = max(self._written.get(key, -1), hi)
        self.rows_written += len(todo)
        if self.on_written is not None:
            self.on_written(len(todo), time.monotonic() - started)
        return len(todo)


def lost_ack_fault(rate: float, seed: int = 20260101) -> Callable[[Batch], None]:
    """A fault hook for resilience tests: after a share of inserts, act as if the
    acknowledgement was lost, so the batch is sent again (it must add no rows)."""
    rng = random.Random(seed)  # noqa: S311 -- a seeded test fault, not a secret

    def fault(batch: Batch) -> None:
        if rng.random() < rate:
            logger.warning(
                "fault injection: pretending the insert of %d rows was not acknowledged", len(batch)
            )
            raise ConnectionError("injected: acknowledgement lost")

    return fault
