"""Hosts the keyed state machines: storage, the deadline index, and the order of work.

The worker runs one Engine with Faust tables as stores (per source partition); the replay runs
one with dicts. Both call ``on_event`` for each event in order and ``advance`` when the clock
moves, so both produce the same alerts and facts.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from portal_pulse.domain.machine import KeyedMachine, State
from portal_pulse.domain.records import Outputs
from schemas.model import CleanEvent

__all__ = ["DictStore", "Engine", "StateStore"]

logger = logging.getLogger(__name__)


class StateStore(Protocol):
    """Key → ``{"p": partition, "s": state, "o": input offset}``; writes name their partition.

    ``o`` is the offset of the last input event folded into the key (absent offline). A value
    whose ``s`` is None is a deletion stub: the key holds nothing, but remembers its offset.
    """

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any], partition: int) -> None: ...

    def delete(self, key: str, partition: int, offset: int | None = None) -> None: ...

    def items(self) -> Iterable[tuple[str, dict[str, Any]]]: ...


class DictStore:
    """In-memory store for the replay and for tests."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.data[key] = value

    def delete(self, key: str, partition: int, offset: int | None = None) -> None:
        self.data.pop(key, None)

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)


class Engine:
    def __init__(
        self, machines: Sequence[KeyedMachine], stores: dict[str, StateStore], out: Outputs
    ) -> None:
        self.machines = list(machines)
        self.stores = stores
        self.out = out
        # partition → heap of (due, seq, machine index, key); stale entries are skipped lazily.
        self._heaps: dict[int, list[tuple[datetime, int, int, str]]] = {}
        self._seq = itertools.count()
        self._compact_at: dict[int, int] = {}

    def rebuild(
        self, partitions: Iterable[int] | None = None, *, keep_others: bool = False
    ) -> None:
        """Rebuild the deadline index from the stores (after a restart or rebalance)."""
        wanted = set(partitions) if partitions is not None else None
        if keep_others and wanted is not None:
            for p in wanted:
                self._heaps.pop(p, None)
        else:
            self._heaps = {}
        for idx, machine in enumerate(self.machines):
            for key, value in self.stores[machine.name].items():
                p = value.get("p", 0)
                if (wanted is not None and p not in wanted) or value.get("s") is None:
                    continue
                self._index(idx, key, value["s"], p)

    def _index(self, idx: int, key: str, state: State, partition: int) -> None:
        due = self.machines[idx].next_due(state)
        if due is not None:
            heap = self._heaps.setdefault(partition, [])
            heapq.heappush(heap, (due, next(self._seq), idx, key))
            if len(heap) > self._compact_at.get(partition, 10_000):
                self._compact(partition)

    def _current(self, entry: tuple[datetime, int, int, str]) -> bool:
        due, _, idx, key = entry
        value = self.stores[self.machines[idx].name].get(key)
        return (
            value is not None
            and value.get("s") is not None
            and self.machines[idx].next_due(value["s"]) == due
        )

    def _compact(self, partition: int) -> None:
        """Drop superseded entries, so the index stays proportional to the live deadlines."""
        heap = [e for e in self._heaps[partition] if self._current(e)]
        heapq.heapify(heap)
        self._heaps[partition] = heap
        self._compact_at[partition] = max(10_000, 2 * len(heap))

    def _store(
        self, idx: int, key: str, state: State | None, partition: int, offset: int | None
    ) -> None:
        store = self.stores[self.machines[idx].name]
        if state is None:
            store.delete(key, partition, offset)
            return
        value: dict[str, Any] = {"p": partition, "s": state}
        if offset is not None:
            value["o"] = offset
        store.put(key, value, partition)
        self._index(idx, key, state, partition)

    def advance(self, now: datetime, partition: int = 0) -> int:
        """Fire every deadline strictly before ``now`` on the partition; returns how many keys."""
        heap = self._heaps.get(partition)
        fired = 0
        while heap and heap[0][0] < now:
            due, _, idx, key = heapq.heappop(heap)
            machine = self.machines[idx]
            value = self.stores[machine.name].get(key)
            if value is None or value.get("s") is None:
                continue
            state = value["s"]
            if machine.next_due(state) != due:
                continue  # superseded entry; the current one is in the heap too
            new_state = machine.advance(state, now, self.out)
            self._store(idx, key, new_state, partition, value.get("o"))
            fired += 1
        return fired

    def on_event(self, event: CleanEvent, partition: int = 0, offset: int | None = None) -> None:
        """Fold the event into every machine that wants it.

        The touched key is first advanced to the event's own time: whatever was due before it,
        for this key, has passed. Other keys move only with the partition clock (``advance``),
        which the host drives from a watermark, so a fast source cannot fire them early.

        With an input ``offset``, a key that already reflects that offset (restored from a
        changelog written before a crash, the input then read again) is left as it is.
        """
        at = event.occurred_at
        for idx, machine in enumerate(self.machines):
            key = machine.key_for(event)
            if key is None:
                continue
            value = self.stores[machine.name].get(key)
            if offset is not None and value is not None and value.get("o", -1) >= offset:
                continue
            state = value["s"] if value is not None else None
            if state is not None:
                due = machine.next_due(state)
                if due is not None and due < at:
                    state = machine.advance(state, at, self.out)
            new_state = machine.apply(state, event, self.out)
            if new_state is None and state is None:
                continue
            self._store(idx, key, new_state, partition, offset)

    def pending(self, partition: int | None = None) -> int:
        heaps = self._heaps.values() if partition is None else [self._heaps.get(partition, [])]
        return sum(len(h) for h in heaps)
