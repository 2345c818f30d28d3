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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from portal_pulse.deadlines import DeadlineIndex
from portal_pulse.domain.instants import from_us, to_us
from portal_pulse.domain.machine import KeyedMachine, State
from portal_pulse.domain.records import Alert, Outputs, ResponseFact
from portal_pulse.keylog import WITHDRAWN as WITHDRAWN_MARK
from portal_pulse.keylog import (
    Collected,
    Envelope,
    differences,
    event_of,
    logged,
    order_key,
    output_id,
)
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
"""Partition (0..32767) and the input offset the key reflects (``NO_OFFSET`` offline)."""
NO_OFFSET = -1
_HEADER_SIZE = VALUE_HEADER.size
ENVELOPE = 0x8000
"""Set in the header's partition field when the value is a key's ``Envelope`` (state, horizon
log, emitted digests) rather than the machine's state alone: values written before corrections
existed still load, as an envelope with an empty log."""
PARTITION_MASK = 0x7FFF


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


class _Recorder:
    """Outputs in the order a machine made them (one key's step), before they are forwarded."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Alert | ResponseFact] = []

    def alert(self, alert: Alert) -> None:
        self.items.append(alert)

    def response(self, fact: ResponseFact) -> None:
        self.items.append(fact)


class _Discard:
    """Outputs of history that is folded away: already emitted, never again."""

    def alert(self, alert: Alert) -> None:
        pass

    def response(self, fact: ResponseFact) -> None:
        pass


_DISCARD = _Discard()

_EMITTED_KEPT = 8
"""Emitted digests a key keeps before a fold prunes those of folded history."""

IN_ORDER = "in_order"
REORDERED = "reordered"
CORRECTED = "corrected"
BEYOND_HORIZON = "beyond_horizon"
WITHDRAWN = "withdrawn"
RAISED_LATE = "raised_late"


class Engine:
    """One host for the keyed machines, in the worker and in the replay.

    Without a ``horizon`` (the replay, which reads every event in event-time order first) a key
    is its machine's state. With one (the worker), each key also keeps its horizon log and what
    it emitted (``portal_pulse.keylog``): an event that arrives behind its key's last applied
    event makes the key be worked out again in event-time order and only the difference be
    emitted (SPEC §7.1). ``holds`` delay each machine's clock-driven alerts (never those an
    event makes fire) so a slightly late event can still prevent them.
    """

    def __init__(
        self,
        machines: Sequence[KeyedMachine],
        stores: dict[str, StateStore],
        out: Outputs,
        on_change: StateChange | None = None,
        *,
        horizon: timedelta | None = None,
        holds: Mapping[str, timedelta] | None = None,
    ) -> None:
        self.machines = list(machines)
        self.stores = stores
        self._stores = [stores[m.name] for m in self.machines]
        self.out = out
        self.on_change = on_change
        self._horizon = None if horizon is None else horizon // timedelta(microseconds=1)
        holds = holds or {}
        self._hold = [
            holds.get(m.name, timedelta(0)) // timedelta(microseconds=1) for m in machines
        ]
        # partition → one deadline index per machine (superseded entries are dropped lazily).
        # Keys are interned: the store and every entry of a key share one string.
        self._indexes: dict[int, list[DeadlineIndex]] = {}
        self._due_of = [self._due_reader(idx) for idx in range(len(self.machines))]
        # event type → indices of the machines that want it (most types: none)
        self._wanted: dict[str, tuple[int, ...]] = {}
        self._clock: dict[int, int] = {}  # partition → the latest instant ``advance`` reached
        self.bad_states = 0  # stored values that did not load on a rebuild
        #: what the last ``on_event`` did with its event: IN_ORDER, REORDERED, CORRECTED,
        #: BEYOND_HORIZON (None: no machine wanted it, or it was a re-read)
        self.last_outcome: str | None = None
        #: (alert kind or "response", WITHDRAWN | RAISED_LATE) → count
        self.corrections: Counter[tuple[str, str]] = Counter()
        #: the corrections of the last ``on_event``: (kind, action, alert or response id)
        self.last_corrections: list[tuple[str, str, str]] = []

    # -- reading states -------------------------------------------------------------------------

    def _load(self, idx: int, key: str, value: bytes) -> State | None:
        """The machine's current state in a stored value (None for a stub)."""
        if len(value) <= _HEADER_SIZE:
            return None
        if VALUE_HEADER.unpack_from(value)[0] & ENVELOPE:
            state_bytes, _ = Envelope.peek(value, _HEADER_SIZE)  # the log stays undecoded
            return None if state_bytes is None else self.machines[idx].loads(key, state_bytes)
        return self.machines[idx].loads(key, value, _HEADER_SIZE)

    def _envelope(self, idx: int, key: str, value: bytes | None) -> Envelope | None:
        """A stored value as an envelope (a machine-only value: an envelope with no log)."""
        if value is None or len(value) <= _HEADER_SIZE:
            return None
        machine = self.machines[idx]
        if not VALUE_HEADER.unpack_from(value)[0] & ENVELOPE:
            state = machine.loads(key, value, _HEADER_SIZE)
            return Envelope(state=state, base=state)
        state_bytes, base_bytes, (floor, log, emitted, ticked, stamp) = Envelope.split(
            value, _HEADER_SIZE
        )
        return Envelope(
            state=None if state_bytes is None else machine.loads(key, state_bytes),
            base=None if base_bytes is None else machine.loads(key, base_bytes),
            floor=floor,
            log=log,
            emitted=emitted,
            ticked=ticked,
            stamp=stamp,
        )

    def peek(self, name: str, key: str) -> tuple[int, int | None, State | None] | None:
        """``(partition, input offset, state)`` stored under ``key``, None when absent."""
        idx = next(i for i, m in enumerate(self.machines) if m.name == name)
        value = self._stores[idx].get(key)
        if value is None:
            return None
        partition, offset = VALUE_HEADER.unpack_from(value)
        return (
            partition & PARTITION_MASK,
            None if offset == NO_OFFSET else offset,
            self._load(idx, key, value),
        )

    # -- the deadline index ---------------------------------------------------------------------

    def _wake(self, idx: int, state: State | None, env: Envelope | None) -> int | None:
        """When the key next needs the clock: its machine's next deadline plus the hold, and
        (with a horizon) when its oldest logged event has been out of the horizon a while (a
        quarter horizon of slack folds several events at once)."""
        return self._wake_at(idx, state, env.log[0][0] if env is not None and env.log else None)

    def _wake_at(self, idx: int, state: State | None, first: int | None) -> int | None:
        due = None if state is None else self.machines[idx].next_due(state)
        if due is not None:
            due += self._hold[idx]
        if first is not None and self._horizon is not None:
            fold = first + self._horizon + self._horizon // 4
            due = fold if due is None else min(due, fold)
        return due

    def _wake_of_value(self, idx: int, key: str, value: bytes) -> int | None:
        if self._horizon is None or not VALUE_HEADER.unpack_from(value)[0] & ENVELOPE:
            return self._wake_at(idx, self._load(idx, key, value), None)
        state_bytes, first = Envelope.peek(value, _HEADER_SIZE)
        state = None if state_bytes is None else self.machines[idx].loads(key, state_bytes)
        return self._wake_at(idx, state, first)

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
                    p = VALUE_HEADER.unpack_from(value)[0] & PARTITION_MASK
                    if wanted is not None and p not in wanted:
                        continue
                    state = self._load(idx, key, value)
                    wake = self._wake_of_value(idx, key, value)
                except Exception as exc:  # a changelog record the engine did not write
                    self.bad_states += 1
                    logger.error(
                        "%s: a stored state does not load (%s): left out of the deadline index",
                        machine.name, type(exc).__name__,
                    )  # fmt: skip
                    continue
                self._push(p, wake, idx, key)
                if state is not None and self.on_change is not None:
                    self.on_change(machine.name, key, p, None, state)

    def _due_reader(self, idx: int) -> Callable[[str], int | None]:
        store = self._stores[idx]

        def due_of(key: str) -> int | None:
            value = store.get(key)
            if value is None or len(value) <= _HEADER_SIZE:
                return None
            return self._wake_of_value(idx, key, value)

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
        env: Envelope | None = None,
    ) -> None:
        """Write the key (``env``, or ``state`` alone without a horizon; nothing left: delete)
        and index its wake-up unless ``indexed_due`` (what the index holds) is the same."""
        machine = self.machines[idx]
        store = self._stores[idx]
        empty = state is None if env is None else (env.state is None and not env.log)
        if empty:
            store.delete(key, partition, offset)
        else:
            stamp = NO_OFFSET if offset is None else offset
            if env is None:
                value = VALUE_HEADER.pack(partition, stamp) + machine.dumps(state)
            else:
                value = VALUE_HEADER.pack(partition | ENVELOPE, stamp) + env.dumps(
                    None if env.state is None else machine.dumps(env.state),
                    None if env.base is None else machine.dumps(env.base),
                )
            store.put(key, value, partition)
            due = self._wake(idx, state, env)
            if due != indexed_due:
                self._push(partition, due, idx, key)
        if self.on_change is not None:
            self.on_change(machine.name, key, partition, before, state)

    def _forward(self, records: Iterable[Alert | ResponseFact]) -> None:
        out = self.out
        for record in records:
            if isinstance(record, Alert):
                out.alert(record)
            else:
                out.response(record)

    def _emit(self, env: Envelope, records: list[Alert | ResponseFact]) -> None:
        """Send a key's versions and remember them; once the key has been corrected, every
        version is stamped after the latest correction so it supersedes it."""
        if env.stamp is not None:
            for n, record in enumerate(records):
                updated = record.updated_at
                if updated is None:  # a response fact's first version: as of its reply
                    updated = record.replied_at  # type: ignore[union-attr]
                at = to_us(updated)
                if at <= env.stamp:
                    at = env.stamp - env.stamp % 1000 + 1000
                    records[n] = replace(record, updated_at=from_us(at))
                env.stamp = max(env.stamp, at)
        self._forward(records)
        env.record(records)

    def advance(self, now: datetime, partition: int = 0) -> int:
        """Fire every deadline strictly before ``now`` (less each machine's hold) on the
        partition, and fold what leaves the horizon; returns how many keys."""
        now_us = to_us(now)
        if now_us > self._clock.get(partition, now_us - 1):
            self._clock[partition] = now_us
        indexes = self._indexes.get(partition)
        if not indexes:
            return 0
        fired = 0
        for idx, index in enumerate(indexes):
            machine = self.machines[idx]
            store = self._stores[idx]
            fire_at = now_us - self._hold[idx]
            for due, key in index.pop_due(now_us, self._due_of[idx]):
                value = store.get(key)
                if value is None or len(value) <= _HEADER_SIZE:
                    continue
                offset = VALUE_HEADER.unpack_from(value)[1]
                offset_or_none = None if offset == NO_OFFSET else offset
                if self._horizon is None:
                    state = self._load(idx, key, value)
                    if state is None or self._wake(idx, state, None) != due:
                        continue  # superseded entry; the current one is in the index too
                    new_state = machine.advance(state, fire_at, self.out)
                    self._store(idx, key, state, new_state, partition, offset_or_none, None)
                    fired += 1
                    continue
                env = self._envelope(idx, key, value)
                if env is None or self._wake(idx, env.state, env) != due:
                    continue
                before = env.state
                if before is not None:
                    step = _Recorder()
                    env.state = self._advance_to(idx, before, fire_at, step)
                    if env.state is not before:
                        env.ticked = fire_at
                    self._emit(env, step.items)
                self._fold(idx, key, env, now_us)
                self._store(idx, key, before, env.state, partition, offset_or_none, None, env)
                fired += 1
        return fired

    def _advance_to(self, idx: int, state: State, at: int, out: Outputs) -> State | None:
        machine = self.machines[idx]
        due = machine.next_due(state)
        if due is not None and due < at:
            return machine.advance(state, at, out)
        return state

    def _recompute(
        self, idx: int, key: str, base: State | None, log: list[Any], fire_at: int | None
    ) -> tuple[State | None, Collected]:
        """The key worked out from ``base`` over ``log`` in event-time order, then run on to
        ``fire_at``: exactly what the incremental path gives when the events come in order."""
        machine = self.machines[idx]
        practice_id = key.partition("|")[0]
        collected = Collected()
        state = base
        for entry in log:
            if state is not None:
                state = self._advance_to(idx, state, entry[0], collected)
            state = machine.apply(state, event_of(entry, practice_id), collected)
        if state is not None and fire_at is not None:
            state = self._advance_to(idx, state, fire_at, collected)
        return state, collected

    def _fold(self, idx: int, key: str, env: Envelope, now_us: int) -> None:
        """Fold the events that have left the horizon into the base: they can no longer be
        corrected; what they emitted is forgotten."""
        if self._horizon is None or not env.log or env.log[0][0] >= now_us - self._horizon:
            return
        machine = self.machines[idx]
        practice_id = key.partition("|")[0]
        limit = now_us - self._horizon
        base = env.base
        while env.log and env.log[0][0] < limit:
            entry = env.log.pop(0)
            if base is not None:
                base = self._advance_to(idx, base, entry[0], _DISCARD)
            base = machine.apply(base, event_of(entry, practice_id), _DISCARD)
            env.floor = entry[0]
        env.base = base
        if len(env.emitted) > _EMITTED_KEPT:
            # Forget what the folded events emitted (it can no longer change); a key's few
            # outputs are kept as they are, rather than worked out again at every fold.
            _, still = self._recompute(idx, key, base, env.log, now_us - self._hold[idx])
            env.emitted = {oid: d for oid, d in env.emitted.items() if oid in still.latest}

    def on_event(self, event: CleanEvent, partition: int = 0, offset: int | None = None) -> None:
        """Fold the event into every machine that wants it.

        The touched key is first advanced to the event's own time: whatever was due before it,
        for this key, has passed. Other keys move only with the partition clock (``advance``),
        which the host drives from a watermark, so a fast source cannot fire them early.

        With an input ``offset``, a key that already reflects that offset (restored from a
        changelog written before a crash, the input then read again) is left as it is.
        """
        self.last_outcome = None
        self.last_corrections = []
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
            if self._horizon is not None:
                self._on_event_correcting(idx, key, value, event, partition, offset)
                continue
            before = None
            indexed: int | None = None
            if value is not None:
                stored_partition, stored_offset = VALUE_HEADER.unpack_from(value)
                if offset is not None and stored_offset >= offset:
                    continue
                before = self._load(idx, key, value)
                if before is not None and stored_partition == partition:
                    indexed = machine.next_due(before)
                    if indexed is not None:
                        indexed += self._hold[idx]
            state = before
            if state is not None:
                due = machine.next_due(state)
                if due is not None and due < at:
                    state = machine.advance(state, at, self.out)
                    indexed = None  # a deadline fired: its entry is spent
            new_state = machine.apply(state, event, self.out)
            self.last_outcome = IN_ORDER
            if new_state is None and before is None:
                continue
            self._store(idx, key, before, new_state, partition, offset, indexed)

    def _on_event_correcting(
        self,
        idx: int,
        key: str,
        value: bytes | None,
        event: CleanEvent,
        partition: int,
        offset: int | None,
    ) -> None:
        machine = self.machines[idx]
        if value is not None:
            stored_offset = VALUE_HEADER.unpack_from(value)[1]
            if offset is not None and stored_offset >= offset:
                return
        env = self._envelope(idx, key, value) or Envelope(state=None)
        before = env.state
        order = order_key(event)
        at = order[0]
        clock = self._clock.get(partition)
        horizon = self._horizon or 0
        if (env.floor is not None and at < env.floor) or (
            clock is not None and at < clock - horizon
        ):
            self.last_outcome = BEYOND_HORIZON
            return
        last = env.last_key()
        if last is not None and order == last:
            return  # this very event is applied already
        if (last is None or order > last) and (env.ticked is None or at >= env.ticked):
            if not env.log and env.base is not None and env.floor is None:
                env.floor = at  # a key stored before logs existed: corrections start here
            step = _Recorder()
            state = env.state
            if state is not None:
                state = self._advance_to(idx, state, at, step)
            env.state = machine.apply(state, event, step)
            env.log.append(logged(event))
            self._emit(env, step.items)
            self.last_outcome = IN_ORDER
        else:
            self._correct(idx, key, env, event, clock)
        if clock is not None:
            self._fold(idx, key, env, clock)
        self._store(idx, key, before, env.state, partition, offset, None, env)

    def _correct(
        self, idx: int, key: str, env: Envelope, event: CleanEvent, clock: int | None
    ) -> None:
        """The key again from its log with ``event`` in its place; emit only the difference."""
        fire_at = None if clock is None else clock - self._hold[idx]
        _, old = self._recompute(idx, key, env.base, env.log, fire_at)
        if not env.insert(logged(event)):
            return
        state, new = self._recompute(idx, key, env.base, env.log, fire_at)
        env.state = state
        if fire_at is not None:
            env.ticked = fire_at if env.ticked is None else max(env.ticked, fire_at)
        withdrawn, changed = differences(old.latest, new.latest, env.emitted)
        if not withdrawn and not changed:
            self.last_outcome = REORDERED
            return
        self.last_outcome = CORRECTED
        # Correction versions carry an instant past every version emitted so far (the latest
        # logged event, the clock), so they replace them wherever the latest version wins; a
        # raise that follows a withdrawal of the same id comes a millisecond later still.
        instant = max(env.log[-1][0], clock or 0, env.stamp or 0)
        withdraw_at = from_us(instant - instant % 1000 + 1000)
        raise_at = from_us(instant - instant % 1000 + 2000)
        env.stamp = to_us(raise_at)
        sent: list[Alert | ResponseFact] = [r.withdraw(withdraw_at) for r in withdrawn]
        for record in changed:
            oid = output_id(record)
            mark = env.emitted.get(oid)
            previous = old.latest.get(oid)
            if (
                isinstance(record, Alert)
                and isinstance(previous, Alert)
                and mark not in (None, WITHDRAWN_MARK)
                and _routing(previous) != _routing(record)
            ):
                # Its clock or routing changed: the page sent goes, the right one comes.
                sent.append(previous.withdraw(withdraw_at))
                self.corrections[(previous.kind, WITHDRAWN)] += 1
                self.last_corrections.append((previous.kind, WITHDRAWN, previous.alert_id))
                mark = None
            later = raise_at if record.updated_at is None else max(record.updated_at, raise_at)
            sent.append(_replace_updated(record, later))
            if isinstance(record, Alert) and mark in (None, WITHDRAWN_MARK):
                self.corrections[(record.kind, RAISED_LATE)] += 1
                self.last_corrections.append((record.kind, RAISED_LATE, record.alert_id))
        for record in withdrawn:
            kind = record.kind if isinstance(record, Alert) else "response"
            self.corrections[(kind, WITHDRAWN)] += 1
            ident = record.alert_id if isinstance(record, Alert) else record.response_id
            self.last_corrections.append((kind, WITHDRAWN, ident))
        self._emit(env, sent)

    def pending(self, partition: int | None = None) -> int:
        """Entries in the deadline index (superseded ones included until dropped)."""
        groups = self._indexes.values() if partition is None else [self._indexes.get(partition, [])]
        return sum(len(index) for indexes in groups for index in indexes)


def _routing(alert: Alert) -> tuple[Any, ...]:
    return alert.due_at, alert.category, alert.staff_pool, alert.patient_pseudonym


def _replace_updated(record: Alert | ResponseFact, at: datetime) -> Alert | ResponseFact:
    return replace(record, updated_at=at)
