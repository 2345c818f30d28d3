"""The engine's deadline index: which keys have a deadline, in due order, at ~10 bytes a key.

A heap of ``(due, key)`` tuples costs about 100 bytes an entry (the tuple and the integer),
more than the packed state it points at. Here a key waits in the list of its due's *slot* (2^32
microseconds, about 72 minutes of event time): 8 bytes a reference, the key string shared with
the store. Only when the clock reaches a slot are its keys staged into a small heap, with their
due read back from the state (``due_of``); so the heap holds about one slot's deadlines, and an
entry whose key has moved on (its due now elsewhere, or gone) is dropped there.

The index never decides what is due by itself: ``pop_due`` yields candidates in due order and the
caller checks each against the state, as with any lazily deleted heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

__all__ = ["SLOT_BITS", "DeadlineIndex"]

SLOT_BITS = 32
"""A slot spans 2^32 µs (~72 minutes); deadlines are days apart, so few keys share one."""

DueOf = Callable[[str], "int | None"]


class DeadlineIndex:
    """Keys by deadline (integer instants) for one partition and machine."""

    __slots__ = ("_compact_at", "_count", "_order", "_slots", "_staged", "_staged_upto")

    def __init__(self) -> None:
        self._slots: dict[int, list[str]] = {}
        self._order: list[int] = []  # heap of the slot numbers in _slots
        self._staged: list[tuple[int, str]] = []  # heap of every entry of slots <= _staged_upto
        self._staged_upto: int | None = None
        self._count = 0
        self._compact_at = 10_000

    def __len__(self) -> int:
        """Entries held, superseded ones included until they are dropped."""
        return self._count

    def push(self, due: int, key: str) -> None:
        slot = due >> SLOT_BITS
        if self._staged_upto is not None and slot <= self._staged_upto:
            heapq.heappush(self._staged, (due, key))
        else:
            keys = self._slots.get(slot)
            if keys is None:
                keys = self._slots[slot] = []
                heapq.heappush(self._order, slot)
            keys.append(key)
        self._count += 1

    def _stage(self, limit: int, due_of: DueOf) -> None:
        """Move the keys of every slot up to ``limit`` into the staging heap, at their current
        due; a key whose due is no longer in that slot has a newer entry elsewhere (or none)."""
        while self._order and self._order[0] <= limit:
            slot = heapq.heappop(self._order)
            keys = self._slots.pop(slot)
            self._count -= len(keys)
            if self._staged_upto is None or slot > self._staged_upto:
                self._staged_upto = slot
            for key in keys:
                due = due_of(key)
                if due is not None and due >> SLOT_BITS == slot:
                    heapq.heappush(self._staged, (due, key))
                    self._count += 1

    def pop_due(self, now: int, due_of: DueOf) -> Iterator[tuple[int, str]]:
        """``(due, key)`` of every entry due strictly before ``now``, earliest first, each removed
        as it is yielded (the caller may push new entries meanwhile)."""
        while True:
            self._stage((now - 1) >> SLOT_BITS, due_of)
            staged = self._staged  # read anew: a compaction meanwhile replaces it
            if not staged or staged[0][0] >= now:
                return
            self._count -= 1
            yield heapq.heappop(staged)

    def compact_if_needed(self, due_of: DueOf) -> None:
        """Drop superseded entries once they outnumber the live ones, so the index stays
        proportional to the keys that have a deadline."""
        if self._count <= self._compact_at:
            return
        live: dict[str, int] = {}
        for keys in self._slots.values():
            for key in keys:
                live[key] = 0
        for _, key in self._staged:
            live[key] = 0
        self.__init__()  # type: ignore[misc]
        for key in live:
            due = due_of(key)
            if due is not None:
                self.push(due, key)
        self._compact_at = max(10_000, 2 * self._count)
