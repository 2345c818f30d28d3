"""A small batching sink: rows gather per table and are written in one insert per flush.

Each batch remembers the Kafka positions it covers, so a retried batch carries the same
deduplication token and the caller acknowledges offsets only after the write succeeded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["Batch", "ClickHouseTableSink", "SinkWriteError", "lost_ack_fault"]

logger = logging.getLogger(__name__)


class SinkWriteError(RuntimeError):
    """A batch could not be written after retries; offsets must not be acknowledged."""


@dataclass
class Batch:
    rows: list[list[Any]] = field(default_factory=list)
    positions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def add(
        self, row: list[Any], topic: str | None = None, partition: int = 0, offset: int = -1
    ) -> None:
        self.rows.append(row)
        if topic is not None:
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

    def __len__(self) -> int:
        return len(self.rows)


class ClickHouseTableSink:
    """Writes batches to one table; retries a failed insert with the same token."""

    def __init__(
        self,
        client: Client,
        table: str,
        columns: Sequence[str],
        *,
        attempts: int = 5,
        backoff: float = 0.2,
        after_insert: Callable[[Batch], None] | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.columns = list(columns)
        self.attempts = attempts
        self.backoff = backoff
        # Fault hook: raising here simulates a write whose acknowledgement was lost, so the
        # same batch is sent again with the same token.
        self.after_insert = after_insert
        self.rows_written = 0

    def write(self, batch: Batch) -> None:
        if not batch.rows:
            return
        token = batch.token(self.table)
        settings = {"insert_deduplication_token": token} if token else {}
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                self.client.insert(
                    self.table, batch.rows, column_names=self.columns, settings=settings
                )
                if self.after_insert is not None:
                    self.after_insert(batch)
                self.rows_written += len(batch.rows)
                return
            except Exception as exc:
                if attempt == self.attempts:
                    raise SinkWriteError(
                        f"insert into {self.table} failed {attempt} times: {exc}"
                    ) from exc
                logger.warning(
                    "insert into %s failed (attempt %d): %s; retrying", self.table, attempt, exc
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def lost_ack_fault(rate: float, seed: int = 20260101) -> Callable[[Batch], None]:
    """A fault hook for resilience tests: after a share of inserts, act as if the
    acknowledgement was lost, so the batch is sent again (it must add no rows)."""
    rng = random.Random(seed)

    def fault(batch: Batch) -> None:
        if rng.random() < rate:
            logger.warning(
                "fault injection: pretending the insert of %d rows was not acknowledged", len(batch)
            )
            raise ConnectionError("injected: acknowledgement lost")

    return fault
