"""Hosts the keyed state machines: storage, the deadline index, and the order of work.

The worker runs one Engine with Faust tables as stores (per source partition); the replay runs
one with dicts. Both call ``on_event`` for each event in order and ``advance`` when the clock
moves, so both produce the same alerts and facts.

Every stored value is bytes: a 10-byte header (the partition and the input offset the key
reflects, ``VALUE_HEADER``) followed by the machine's ``dumps`` of its state. The same bytes are
the key's changelog record, so memory and changelog hold one compact form and a write costs no
serialisation beyond the machine's own. A header alone is a deletion stub: the key holds nothing,
but remembers its offset.
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from portal_pulse.deadlines import DeadlineIndex
from portal_pulse.domain.instants import to_us
from portal_pulse.domain.machine import KeyedMachine, State
from portal_pulse.domain.records import Outputs
from schemas.model import CleanEvent

__all__ = [
    "NO_OFFSET",
    "VALUE_HEADER",
    "DictStore",
    "Engine",
    "StateChange",
    "StateStore",
    "is_stub",
    "stub",
]

logger = logging.getLogger(__name__)

VALUE_HEADER = struct.Struct("<Hq")
"""Partition (0..65535) and the input offset the key reflects (``NO_OFFSET`` offline)."""
NO_OFFSET = -1
_HEADER_SIZE = VALUE_HEADER.size


def stub(partition: int, offset: int | None) -> bytes:
    """The value of a deleted key that still remembers the input offset that deleted it."""
    return VALUE_HEADER.pack(partition, NO_OFFSET if offset is None else offset)


def is_stub(value: bytes) -> bool:
    return len(value) <= _HEADER_SIZE


class StateStore(Protocol):
    """Key → value bytes (``VALUE_HEADER`` + state); writes name their partition."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, partition: int) -> None: ...

    def delete(self, key: str, partition: int, offset: int | None = None) -> None: ...

    def items(self) -> Iterable[tuple[str, bytes]]: ...


class DictStore:
    """In-memory store for the replay and for tests."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any, partition: int) -> None:
        self.data[key] = value

    def delete(self, key: str, partition: int, offset: int | None = None) -> None:
        self.data.pop(key, None)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)


StateChange = Callable[[str, str, int, State | None, State | None], None]
"""``(machine name, key, partition, state before, state after)``: a key's state was written
(``before`` None on a rebuild from the stores)."""


class Engine:
    def __init__(
        self,
        machines: Sequence[KeyedMachine],
        stores: dict[str, StateStore],
        out: Outputs,
        on_change: StateChange | None = None,
    ) -> None:
        self.machines = list(machines)
        self.stores = stores
        self._stores = [stores[m.name] for m in self.machines]
        self.out = out
        self.on_change = on_change
        # partition → one deadline index per machine (superseded entries are dropped lazily).
        # Keys are interned: the store and every entry of a key share one string.
        self._indexes: dict[int, list[DeadlineIndex]] = {}
        self._due_of = [self._due_reader(idx) for idx in range(len(self.machines))]
        # event type → indices of the machines that want it (most types: none)
        self._wanted: dict[str, tuple[int, ...]] = {}
        self.bad_states = 0  # stored values that did not load on a rebuild

    # -- reading states -------------------------------------------------------------------------

    def _load(self, idx: int, key: str, value: bytes) -> State | None:
        if len(value) <= _HEADER_SIZE:
            return None
        return self.machines[idx].loads(key, value, _HEADER_SIZE)

    def peek(self, name: str, key: str) -> tuple[int, int | None, State | None] | None:
        """``(partition, input offset, state)`` stored under ``key``, None when absent."""
        idx = next(i for i, m in enumerate(self.machines) if m.name == name)
        value = self._stores[idx].get(key)
        if value is None:
            return None
        partition, offset = VALUE_HEADER.unpack_from(value)
        return partition, (None if offset == NO_OFFSET else offset), self._load(idx, key, value)

    # -- the deadline index ---------------------------------------------------------------------

    def rebuild(
        self, partitions: Iterable[int] | None = None, *, keep_others: bool = False
    ) -> None:
        """Rebuild the deadline index from the stores (after a restart or rebalance); every
        state rebuilt is also reported to ``on_change`` (``before`` None)."""
        wanted = set(partitions) if partitions is not None else None
        if keep_others and wanted is not None:
            for p in wanted:
                self._indexes.pop(p, None)
        else:
            self._indexes = {}
        for idx, machine in enumerate(self.machines):
            for key, value in self._stores[idx].items():
                try:
                    p = VALUE_HEADER.unpack_from(value)[0]
                    if wanted is not None and p not in wanted:
                        continue
                    state = self._load(idx, key, value)
                except Exception as exc:  # a changelog record the engine did not write
                    self.bad_states += 1
                    logger.error(
                        "%s: a stored state does not load (%s): left out of the deadline index",
                        machine.name, type(exc).__name__,
                    )  # fmt: skip
                    continue
                if state is None:
                    continue
                self._push(p, machine.next_due(state), idx, key)
                if self.on_change is not None:
                    self.on_change(machine.name, key, p, None, state)

    def _due_reader(self, idx: int) -> Callable[[str], int | None]:
        store, machine = self._stores[idx], self.machines[idx]

        def due_of(key: str) -> int | None:
            value = store.get(key)
            if value is None or len(value) <= _HEADER_SIZE:
                return None
            return machine.next_due(machine.loads(key, value, _HEADER_SIZE))

        return due_of

    def _index(self, partition: int) -> list[DeadlineIndex]:
        indexes = self._indexes.get(partition)
        if indexes is None:
            indexes = self._indexes[partition] = [DeadlineIndex() for _ in self.machines]
        return indexes

    def _push(self, partition: int, due: int | None, idx: int, key: str) -> None:
        if due is None:
            return
        index = self._index(partition)[idx]
        index.push(due, key)
        index.compact_if_needed(self._due_of[idx])

    # -- writing states -------------------------------------------------------------------------

    def _store(
        self,
        idx: int,
        key: str,
        before: State | None,
        state: State | None,
        partition: int,
        offset: int | None,
        indexed_due: int | None,
    ) -> None:
        """Write ``state`` (None: delete) and index its deadline unless ``indexed_due`` (the
        deadline the index already holds for this key on this partition) is the same."""
        machine = self.machines[idx]
        store = self._stores[idx]
        if state is None:
            store.delete(key, partition, offset)
        else:
            header = VALUE_HEADER.pack(partition, NO_OFFSET if offset is None else offset)
            store.put(key, header + machine.dumps(state), partition)
            due = machine.next_due(state)
            if due != indexed_due:
                self._push(partition, due, idx, key)
        if self.on_change is not None:
            self.on_change(machine.name, key, partition, before, state)

    def advance(self, now: datetime, partition: int = 0) -> int:
        """Fire every deadline strictly before ``now`` on the partition; returns how many keys."""
        indexes = self._indexes.get(partition)
        if not indexes:
            return 0
        now_us = to_us(now)
        fired = 0
        for idx, index in enumerate(indexes):
            machine = self.machines[idx]
            store = self._stores[idx]
            for due, key in index.pop_due(now_us, self._due_of[idx]):
                value = store.get(key)
                if value is None:
                    continue
                state = self._load(idx, key, value)
                if state is None or machine.next_due(state) != due:
                    continue  # superseded entry; the current one is in the index too
                new_state = machine.advance(state, now_us, self.out)
                offset = VALUE_HEADER.unpack_from(value)[1]
                self._store(
                    idx, key, state, new_state, partition,
                    None if offset == NO_OFFSET else offset, None,
                )  # fmt: skip
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
        wanted = self._wanted.get(event.event_type)
        if wanted is None:
            wanted = self._wanted[event.event_type] = tuple(
                i for i, m in enumerate(self.machines) if event.event_type in m.event_types
            )
        if not wanted:
            return
        at = to_us(event.occurred_at)
        for idx in wanted:
            machine = self.machines[idx]
            key = machine.key_for(event)
            if key is None:
                continue
            key = sys.intern(key)  # one string per key, shared by the store and the index
            value = self._stores[idx].get(key)
            before = None
            indexed: int | None = None
            if value is not None:
                stored_partition, stored_offset = VALUE_HEADER.unpack_from(value)
                if offset is not None and stored_offset >= offset:
                    continue
                before = self._load(idx, key, value)
                if before is not None and stored_partition == partition:
                    indexed = machine.next_due(before)
            state = before
            if state is not None:
                due = indexed if indexed is not None else machine.next_due(state)
                if due is not None and due < at:
                    state = machine.advance(state, at, self.out)
                    indexed = None  # a deadline fired: its entry is spent
            new_state = machine.apply(state, event, self.out)
            if new_state is None and before is None:
                continue
            self._store(idx, key, before, new_state, partition, offset, indexed)

    def pending(self, partition: int | None = None) -> int:
        """Entries in the deadline index (superseded ones included until dropped)."""
        groups = self._indexes.values() if partition is None else [self._indexes.get(partition, [])]
        return sum(len(index) for indexes in groups for index in indexes)
