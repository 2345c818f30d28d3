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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust

from portal_pulse.engine import is_stub, stub
from streams.delivery import DeliveringProducer

__all__ = ["JSON_VALUES", "STATE_VALUES", "ChangelogStore", "Values"]

logger = logging.getLogger(__name__)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Values:
    """How a store's values are written to the changelog and what a deletion stub looks like."""

    serializer: str  # the Faust table's value serializer, which reads the changelog back
    dumps: Callable[[Any], bytes]
    stub: Callable[[int, int], Any]
    is_stub: Callable[[Any], bool]


#: ``{"p": partition, "s": state, "o": offset}`` dicts (live figures, partition markers).
JSON_VALUES = Values(
    "json", _json, lambda p, o: {"p": p, "s": None, "o": o}, lambda v: v.get("s") is None
)
#: The engine's bytes (``portal_pulse.engine``): memory and changelog hold the same bytes.
STATE_VALUES = Values("raw", bytes, stub, is_stub)


class ChangelogStore:
    """Key → value in a Faust table (``Values`` says which kind); changelog on ``write_changes``."""

    def __init__(
        self, table: faust.Table, delivery: DeliveringProducer, values: Values = JSON_VALUES
    ) -> None:
        self.table = table
        self.delivery = delivery
        self.values = values
        self.topic = table.changelog_topic.get_topic_name()
        self._dirty: dict[str, int] = {}
        # Deleted keys are first written as stubs that keep their input offset (a re-read of
        # that input must not bring them back), and tombstoned at the following checkpoint.
        self._stubbed: dict[str, int] = {}

    @property
    def _data(self) -> dict[str, Any]:
        # The memory store's own dict: Faust's mapping wrapper costs a call per access.
        return self.table.data.data  # type: ignore[no-any-return]

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def put(self, key: str, value: Any, partition: int) -> None:
        self._data[key] = value
        self._dirty[key] = partition

    def delete(self, key: str, partition: int, offset: int | None = None) -> None:
        if offset is not None:
            self._data[key] = self.values.stub(partition, offset)
            self._dirty[key] = partition
        elif self._data.pop(key, None) is not None or key in self._dirty:
            self._dirty[key] = partition

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def __len__(self) -> int:
        return len(self.table.data)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def write_changes(self) -> int:
        """Send the changelog record of every key changed since the last call (not flushed)."""
        dirty, self._dirty = self._dirty, {}
        data = self._data
        values = self.values
        stubbed, self._stubbed = self._stubbed, {}
        for key, partition in stubbed.items():
            value = data.get(key)
            if key not in dirty and value is not None and values.is_stub(value):
                del data[key]
                dirty[key] = partition
        send, dumps = self.delivery.send, values.dumps
        for key, partition in dirty.items():
            value = data.get(key)
            if value is None:
                self.delivery.send_tombstone(self.topic, _json(key), partition)
            else:
                if values.is_stub(value):
                    self._stubbed[key] = partition
                send(self.topic, dumps(value), _json(key), partition=partition)
        return len(dirty)

    def forget(self, partitions: set[int]) -> None:
        """Drop unwritten changes of partitions this worker no longer owns."""
        self._dirty = {k: p for k, p in self._dirty.items() if p not in partitions}
        self._stubbed = {k: p for k, p in self._stubbed.items() if p not in partitions}
