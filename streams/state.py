"""Changelog-backed state whose changelog is written at the checkpoint, after the outputs.

Faust restores each table from its changelog topic when partitions are assigned. We write the
changelog ourselves, through the librdkafka producer, and only once the outputs that the same
state changes produced are delivered (``streams.checkpoint``): a restored state therefore never
claims an alert was raised that did not reach Kafka. Each changed key is written once per
checkpoint (last write wins), which also keeps the changelog small.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust

from streams.delivery import DeliveringProducer

__all__ = ["ChangelogStore"]

logger = logging.getLogger(__name__)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class ChangelogStore:
    """Key → ``{"p": partition, "s": state, ...}`` in a Faust table; changelog on ``write_changes``."""

    def __init__(self, table: faust.Table, delivery: DeliveringProducer) -> None:
        self.table = table
        self.delivery = delivery
        self.topic = table.changelog_topic.get_topic_name()
        self._dirty: dict[str, int] = {}
        # Deleted keys are first written as stubs that keep their input offset (a re-read of
        # that input must not bring them back), and tombstoned at the following checkpoint.
        self._stubbed: dict[str, int] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.table.data.get(key)

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.table.data[key] = value
        self._dirty[key] = partition

    def delete(self, key: str, partition: int, offset: int | None = None) -> None:
        if offset is not None:
            self.table.data[key] = {"p": partition, "s": None, "o": offset}
            self._dirty[key] = partition
        elif self.table.data.pop(key, None) is not None or key in self._dirty:
            self._dirty[key] = partition

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.table.data.items())

    def __len__(self) -> int:
        return len(self.table.data)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def write_changes(self) -> int:
        """Send the changelog record of every key changed since the last call (not flushed)."""
        dirty, self._dirty = self._dirty, {}
        data = self.table.data
        stubbed, self._stubbed = self._stubbed, {}
        for key, partition in stubbed.items():
            value = data.get(key)
            if key not in dirty and value is not None and value.get("s") is None:
                del data[key]
                dirty[key] = partition
        for key, partition in dirty.items():
            value = data.get(key)
            if value is None:
                self.delivery.send_tombstone(self.topic, _json(key), partition)
            else:
                if value.get("s") is None:
                    self._stubbed[key] = partition
                self.delivery.send(self.topic, _json(value), _json(key), partition=partition)
        return len(dirty)

    def forget(self, partitions: set[int]) -> None:
        """Drop unwritten changes of partitions this worker no longer owns."""
        self._dirty = {k: p for k, p in self._dirty.items() if p not in partitions}
        self._stubbed = {k: p for k, p in self._stubbed.items() if p not in partitions}
