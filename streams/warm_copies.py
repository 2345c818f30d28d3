"""Standby replicas: every state table's changelog, tailed on a thread of its own.

With ``PORTAL_PULSE_STANDBY_REPLICAS`` ≥ 1 each worker keeps a copy of every partition of every
state table, read from the changelogs as they are written. When a partition comes to this worker
(a failover, a rebalance), the consumer loop starts from that copy and reads only the changelog
records after it, instead of the whole changelog (``ConsumerLoop._restore``). A copy is only a
starting point: the loop always reads on to the changelog's end before the partition is
processed, so a copy that is behind costs time, never correctness.

A copy holds the records' bytes, each key's latest value, and is decoded only when its
partition is taken over: decoding every changelog record as it was written cost about 5 % of a
worker that holds every partition itself (benchmarks/README.md). Decoding the latest value per
key at take-over gives the table the eager reading would have: a later record of a key replaces
an earlier one either way, and a tombstone removes the key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.state import StateTable

__all__ = ["WarmCopies"]

logger = logging.getLogger(__name__)


class WarmCopies:
    POLL_SECONDS = 0.2  # how soon a stop is noticed (liveness only)

    def __init__(self, config: dict[str, Any], tables: Sequence[StateTable]) -> None:
        self.config = config
        self.tables = {t.topic: t for t in tables}
        self._lock = threading.Lock()
        # (changelog topic, partition) → (key bytes → latest value bytes, next offset to read)
        self._copies: dict[tuple[str, int], tuple[dict[bytes, bytes], int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0
        self.bad_records = 0

    def start(self) -> None:
        if not self.tables:
            return
        self._thread = threading.Thread(target=self._run, name="standby-replicas", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def copy_of(self, topic: str, partition: int) -> tuple[dict[Any, Any], int] | None:
        """A copy of the partition's contents and the next changelog offset after them."""
        with self._lock:
            held = self._copies.get((topic, partition))
            if held is None:
                return None
            records, next_offset = list(held[0].items()), held[1]
        table = self.tables[topic]
        contents: dict[Any, Any] = {}
        for key, value in records:  # in the order each key was last written
            try:
                table.apply(contents, key, value)
            except ValueError:  # not a record this pipeline wrote: skipped, as a restore does
                self.bad_records += 1
        return contents, next_offset

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        while not self._stop.is_set():
            try:
                meta = consumer.list_topics(timeout=10)
                break
            except KafkaException as exc:
                logger.warning("standby replicas: %s (retrying)", exc)
                self._stop.wait(2.0)  # liveness only: the broker is away
        else:
            return []
        return [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in sorted(self.tables)
            if topic in meta.topics
            for p in meta.topics[topic].partitions
        ]

    def _run(self) -> None:
        consumer = Consumer(self.config)
        try:
            partitions = self._partitions(consumer)
            if not partitions:
                return
            consumer.assign(partitions)
            while not self._stop.is_set():
                records = consumer.consume(10_000, self.POLL_SECONDS)
                if records:
                    self._apply(records)
        except KafkaException as exc:  # standbys only speed recovery up: log, and go without
            logger.error("standby replicas stopped: %s (recovery reads whole changelogs)", exc)
        finally:
            consumer.close()

    def _apply(self, records: list[Any]) -> None:
        with self._lock:
            copies = self._copies
            for m in records:
                if m.error() is not None:
                    continue
                topic, partition = m.topic(), m.partition()
                held = copies.get((topic, partition))
                latest = held[0] if held is not None else {}
                key, value = m.key(), m.value()
                if key is None:
                    self.bad_records += 1  # no key: nothing this pipeline writes
                else:
                    latest.pop(key, None)  # re-inserted last: the order of last writes
                    if value is not None:
                        latest[key] = value
                    self.records += 1
                copies[(topic, partition)] = (latest, m.offset() + 1)
