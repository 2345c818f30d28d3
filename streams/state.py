"""Changelog-backed state whose changelog is written at the checkpoint, after the outputs.

A ``StateTable`` is a dict in memory and a compacted changelog topic in Kafka. The consumer
loop (``streams.consumer_loop``) restores it from the changelog when partitions are assigned,
before any input record of those partitions is handed over. The changelog is written here,
through the librdkafka producer, and only once the outputs that the same state changes produced
are delivered (``streams.checkpoint``): a restored state therefore never claims an alert was
raised that did not reach Kafka. Each changed key is written once per checkpoint (last write
wins), which also keeps the changelog small.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portal_pulse import json_text
from portal_pulse.engine import is_stub, stub
from streams.delivery import DeliveringProducer

__all__ = [
    "JSON_VALUES",
    "MARKER_VALUES",
    "STATE_VALUES",
    "ChangelogStore",
    "StateTable",
    "Values",
    "changelog_topic",
]

logger = logging.getLogger(__name__)


_json = json_text.compact_bytes


@dataclass(frozen=True)
class Values:
    """How a store's values are written to the changelog and what a deletion stub looks like."""

    loads: Callable[[bytes], Any]  # reads the changelog back
    dumps: Callable[[Any], bytes]
    stub: Callable[[int, int], Any]
    is_stub: Callable[[Any], bool]


#: ``{"p": partition, "s": state, "o": offset}`` dicts (live figures, partition markers).
JSON_VALUES = Values(
    json.loads, _json, lambda p, o: {"p": p, "s": None, "o": o}, lambda v: v.get("s") is None
)
#: The engine's bytes (``portal_pulse.engine``): memory and changelog hold the same bytes.
STATE_VALUES = Values(bytes, bytes, stub, is_stub)
#: Partition markers (``{"p", "s": clock, "o", "src", ...}``): never deleted, so no value is a
#: stub. Under ``JSON_VALUES`` a marker written before its partition's clock started
#: (``"s": None``) read as a deletion stub and was tombstoned at the next checkpoint, and with it
#: the offset and raw positions it holds: after a stop, the next owner took second copies of raw
#: records for new events.
MARKER_VALUES = Values(json.loads, _json, lambda p, o: {"p": p, "s": None, "o": o}, lambda v: False)


def changelog_topic(app_id: str, name: str) -> str:
    """A table's changelog (the name Faust gave it, so existing changelogs are read back)."""
    return f"{app_id}-{name}-changelog"


class StateTable:
    """Key → value for the partitions this worker owns, restored from ``topic`` on assignment.

    ``by`` names the input topics whose partition numbers the table's partitions follow: a
    table partition is restored when the worker is given that partition of those topics.
    Keys are JSON in the changelog (``str`` or ``list`` once read back), values ``values``."""

    def __init__(
        self, app_id: str, name: str, by: frozenset[str], values: Values | None = None
    ) -> None:
        self.name = name
        self.topic = changelog_topic(app_id, name)
        self.by = by
        self.values = values or JSON_VALUES
        self.data: dict[Any, Any] = {}

    def apply(self, data: dict[Any, Any], key: bytes | None, value: bytes | None) -> None:
        """One changelog record into ``data`` (recovery): a tombstone deletes the key.

        ``ValueError`` for a record this pipeline did not write; the caller skips and counts it.
        A list key becomes a tuple (hashable), as Faust's tables made it."""
        if key is None:
            raise ValueError("a changelog record without a key")
        k = json.loads(key)
        if isinstance(k, list):
            k = tuple(k)
        try:
            hash(k)
        except TypeError:  # an object, or a list inside the list: no key this pipeline writes
            raise ValueError("a changelog key that cannot be a key") from None
        if value is None:
            data.pop(k, None)
        else:
            data[k] = self.values.loads(value)

    def install(self, data: dict[Any, Any]) -> None:
        """The restored contents (on the event loop, before any record is handed over)."""
        self.data = data

    def __len__(self) -> int:
        return len(self.data)


class ChangelogStore:
    """Key → value in a ``StateTable``; its changelog records on ``write_changes``."""

    def __init__(self, table: StateTable, delivery: DeliveringProducer) -> None:
        self.table = table
        self.delivery = delivery
        self.values = table.values
        self.topic = table.topic
        self._dirty: dict[str, int] = {}
        # Deleted keys are first written as stubs that keep their input offset (a re-read of
        # that input must not bring them back), and tombstoned at the following checkpoint.
        self._stubbed: dict[str, int] = {}

    @property
    def _data(self) -> dict[Any, Any]:
        return self.table.data

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
