"""The engine hosting keyed machines: deadline index per partition, lazy deletion, rebuild."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.domain.instants import from_us, to_us
from portal_pulse.domain.machine import KeyedMachine, State
from portal_pulse.engine import VALUE_HEADER, DictStore, Engine
from schemas.model import CleanEvent

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
H = timedelta(hours=1)


@dataclass
class FakeOut:
    alerts: list[Any] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)

    def alert(self, alert: Any) -> None:
        self.alerts.append(alert)

    def response(self, fact: Any) -> None:
        self.responses.append(fact)


class FakeMachine:
    """Keyed on ``details["key"]``; an event sets the key's pending deadlines (``dues``).

    ``advance`` fires only the earliest deadline, so a key with several past deadlines needs the
    engine to keep going. Every call is recorded.
    """

    event_types = frozenset({"record.viewed"})

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.calls: list[tuple[Any, ...]] = []

    def dumps(self, state: State) -> bytes:
        return json.dumps(state).encode()

    def loads(self, key: str, data: bytes, start: int = 0) -> State:
        return json.loads(data[start:])

    def key_for(self, event: CleanEvent) -> str | None:
        return event.get("key")

    def apply(self, state: State | None, event: CleanEvent, out: Any) -> State | None:
        self.calls.append(("apply", event.get("key"), event.event_id, state))
        if event.get("delete"):
            return None
        dues = event.get("dues", [])
        return {
            "dues": sorted(dues),
            "last_event": event.event_id,
            "drop_on_fire": bool(event.get("drop_on_fire")),
        }

    def advance(self, state: State, now: int, out: Any) -> State | None:
        due = state["dues"][0]
        self.calls.append(("advance", from_us(now), due))
        out.alert((self.name, due))
        if state["drop_on_fire"]:
            return None
        return {**state, "dues": state["dues"][1:]}

    def next_due(self, state: State) -> int | None:
        return to_us(datetime.fromisoformat(state["dues"][0])) if state["dues"] else None


class RecordingStore(DictStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, int]] = []

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.writes.append(("put", key, partition))
        super().put(key, value, partition)

    def delete(self, key: str, partition: int, offset: int | None = None) -> None:
        self.writes.append(("delete", key, partition))
        super().delete(key, partition)


_seq = iter(range(1_000_000))


def ev(key: str | None, at: datetime = T0, *dues: datetime, **details: Any) -> CleanEvent:
    info: dict[str, Any] = {"dues": [d.isoformat() for d in dues], **details}
    if key is not None:
        info["key"] = key
    return CleanEvent(f"e{next(_seq)}", "record.viewed", at, "p1", "ab" * 16, info)


def make(*names: str) -> tuple[Engine, list[FakeMachine], dict[str, RecordingStore], FakeOut]:
    machines = [FakeMachine(n) for n in names or ("fake",)]
    stores = {m.name: RecordingStore() for m in machines}
    out = FakeOut()
    machine_list: list[KeyedMachine] = list(machines)
    return Engine(machine_list, stores, out), machines, stores, out  # type: ignore[arg-type]


def advances(machine: FakeMachine) -> list[tuple[Any, ...]]:
    return [c for c in machine.calls if c[0] == "advance"]


def test_deadline_fires_strictly_before_now() -> None:
    engine, (m,), _, out = make()
    engine.on_event(ev("k", T0, T0 + H))
    assert engine.advance(T0 + H) == 0  # due == now: not yet
    assert advances(m) == []
    assert engine.advance(T0 + H + MS) == 1
    assert advances(m) == [("advance", T0 + H + MS, (T0 + H).isoformat())]
    assert out.alerts == [("fake", (T0 + H).isoformat())]
    assert engine.advance(T0 + 10 * H) == 0  # fired once only
    assert engine.pending() == 0


def test_state_is_stored_with_its_partition() -> None:
    engine, _, stores, _ = make()
    engine.on_event(ev("k", T0, T0 + H), partition=3)
    stored = engine.peek("fake", "k")
    assert stored is not None
    partition, offset, state = stored
    assert (partition, offset) == (3, None)
    assert state["dues"] == [(T0 + H).isoformat()]
    assert VALUE_HEADER.unpack_from(stores["fake"].get("k")) == (3, -1)
    assert stores["fake"].writes == [("put", "k", 3)]


def test_deadlines_are_per_partition() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("a", T0, T0 + H), partition=0)
    engine.on_event(ev("b", T0, T0 + H), partition=1)
    assert (engine.pending(0), engine.pending(1), engine.pending()) == (1, 1, 2)
    assert engine.advance(T0 + 2 * H, partition=0) == 1
    assert engine.pending(1) == 1
    assert engine.advance(T0 + 2 * H, partition=7) == 0  # unknown partition: nothing
    assert engine.advance(T0 + 2 * H, partition=1) == 1
    assert [c[2] for c in advances(m)] == [(T0 + H).isoformat()] * 2


def test_deadlines_fire_in_due_order_across_keys() -> None:
    engine, (m,), _, _ = make()
    for key, hours in (("c", 3), ("a", 1), ("b", 2)):
        engine.on_event(ev(key, T0, T0 + hours * H))
    assert engine.advance(T0 + 5 * H) == 3
    assert [c[2] for c in advances(m)] == [(T0 + h * H).isoformat() for h in (1, 2, 3)]


def test_several_past_deadlines_of_one_key_all_fire() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("k", T0, T0 + H, T0 + 2 * H, T0 + 5 * H))
    assert engine.advance(T0 + 3 * H) == 2
    assert [c[2] for c in advances(m)] == [(T0 + H).isoformat(), (T0 + 2 * H).isoformat()]
    assert engine.peek("fake", "k")[2]["dues"] == [(T0 + 5 * H).isoformat()]


def test_superseded_heap_entries_are_skipped_lazily() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("k", T0, T0 + H))
    engine.on_event(ev("k", T0 + MS, T0 + 3 * H))  # moves the deadline later
    assert engine.pending() == 2  # the old entry is still in the heap...
    assert engine.advance(T0 + 2 * H) == 0  # ...but is not fired
    assert advances(m) == []
    assert engine.pending() == 1
    assert engine.advance(T0 + 4 * H) == 1
    assert [c[2] for c in advances(m)] == [(T0 + 3 * H).isoformat()]


def test_cleared_deadline_never_fires() -> None:
    engine, (m,), stores, _ = make()
    engine.on_event(ev("k", T0, T0 + H))
    engine.on_event(ev("k", T0 + MS))  # no deadline any more, state kept
    assert engine.advance(T0 + 5 * H) == 0
    assert advances(m) == []
    assert "k" in stores["fake"].data


def test_delete_when_apply_returns_none() -> None:
    engine, (m,), stores, _ = make()
    engine.on_event(ev("k", T0, T0 + H), partition=2)
    engine.on_event(ev("k", T0 + MS, delete=True), partition=2)
    assert stores["fake"].get("k") is None
    assert stores["fake"].writes == [("put", "k", 2), ("delete", "k", 2)]
    assert engine.advance(T0 + 5 * H, partition=2) == 0  # the stale entry finds no state
    assert advances(m) == []


def test_apply_none_for_an_unknown_key_writes_nothing() -> None:
    engine, _, stores, _ = make()
    engine.on_event(ev("k", T0, delete=True))
    assert stores["fake"].writes == []


def test_delete_when_advance_returns_none() -> None:
    engine, _, stores, out = make()
    engine.on_event(ev("k", T0, T0 + H, drop_on_fire=True))
    assert engine.advance(T0 + 2 * H) == 1
    assert stores["fake"].get("k") is None
    assert stores["fake"].writes[-1] == ("delete", "k", 0)
    assert len(out.alerts) == 1


def test_ignored_events_touch_nothing() -> None:
    engine, (m,), stores, _ = make()
    engine.on_event(ev(None, T0, T0 + H))
    assert m.calls == []
    assert stores["fake"].writes == []
    assert engine.pending() == 0


def test_every_interested_machine_gets_the_event() -> None:
    engine, (m1, m2), stores, _ = make("one", "two")
    engine.on_event(ev("k", T0, T0 + H))
    assert [c[0] for c in m1.calls] == [c[0] for c in m2.calls] == ["apply"]
    assert "k" in stores["one"].data and "k" in stores["two"].data
    assert engine.advance(T0 + 2 * H) == 2


def test_event_first_fires_what_its_own_key_had_due_before_it() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("k", T0, T0 + H))
    engine.on_event(ev("other", T0, T0 + H))
    engine.on_event(ev("k", T0 + 2 * H, T0 + 5 * H))
    assert [c[0] for c in m.calls] == ["apply", "apply", "advance", "apply"]
    assert m.calls[2] == ("advance", T0 + 2 * H, (T0 + H).isoformat())
    # The advanced state is what apply sees; the other key waits for the partition clock.
    assert m.calls[3][3]["dues"] == []
    assert engine.advance(T0 + 2 * H) == 1
    assert advances(m)[-1] == ("advance", T0 + 2 * H, (T0 + H).isoformat())


def test_event_at_exactly_the_due_time_does_not_fire_it() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("k", T0, T0 + H))
    engine.on_event(ev("k", T0 + H, T0 + H))
    assert advances(m) == []


def test_rebuild_from_stores_after_restart() -> None:
    engine, _, stores, _ = make()
    engine.on_event(ev("a", T0, T0 + H), partition=0)
    engine.on_event(ev("b", T0, T0 + 2 * H), partition=1)
    engine.on_event(ev("c", T0), partition=1)  # no deadline
    machine = FakeMachine()
    restarted = Engine([machine], stores, FakeOut())  # type: ignore[list-item]
    assert restarted.pending() == 0
    restarted.rebuild()
    assert (restarted.pending(0), restarted.pending(1)) == (1, 1)
    assert restarted.advance(T0 + 3 * H, partition=1) == 1
    assert advances(machine) == [("advance", T0 + 3 * H, (T0 + 2 * H).isoformat())]


def test_rebuild_selected_partitions() -> None:
    engine, _, _, _ = make()
    for p in (0, 1, 2):
        engine.on_event(ev(f"k{p}", T0, T0 + H), partition=p)
    engine.rebuild([1])
    assert (engine.pending(0), engine.pending(1), engine.pending(2)) == (0, 1, 0)
    engine.rebuild()
    engine.on_event(ev("k0", T0 + MS, T0 + 2 * H), partition=0)  # a stale entry on partition 0
    assert engine.pending(0) == 2
    engine.rebuild([0, 2], keep_others=True)
    assert (engine.pending(0), engine.pending(1), engine.pending(2)) == (1, 1, 1)


def test_rebuild_does_not_duplicate_entries() -> None:
    engine, (m,), _, _ = make()
    engine.on_event(ev("k", T0, T0 + H))
    engine.rebuild()
    engine.rebuild([0], keep_others=True)
    assert engine.pending() == 1
    assert engine.advance(T0 + 2 * H) == 1
    assert len(advances(m)) == 1


def test_dict_store() -> None:
    store = DictStore()
    store.put("a", b"v", 0)
    assert store.get("a") == b"v"
    assert len(store) == 1
    items = store.items()
    store.delete("a", 0)  # items() is a snapshot: deleting while iterating is safe
    assert list(items) == [("a", b"v")]
    store.delete("a", 0)
    assert store.get("a") is None


def test_superseded_entries_are_compacted_so_the_index_stays_bounded() -> None:
    engine, (m,), _, _ = make()
    for i in range(30_000):  # one key whose deadline moves on every event
        engine.on_event(ev("k", T0 + i * MS, T0 + H + i * MS))
    assert engine.pending() <= 10_001
    assert engine.advance(T0 + 2 * H) == 1
    assert [c[2] for c in advances(m)] == [(T0 + H + 29_999 * MS).isoformat()]


def test_a_touch_that_keeps_the_deadline_adds_no_index_entry() -> None:
    engine, (m,), _, _ = make()
    for i in range(5):  # five events, the same deadline each time
        engine.on_event(ev("k", T0 + i * MS, T0 + H))
    assert engine.pending() == 1
    assert engine.advance(T0 + 2 * H) == 1
    assert len(advances(m)) == 1


def test_types_no_machine_wants_are_not_offered_to_any() -> None:
    engine, (m,), stores, _ = make()
    other = CleanEvent("x", "patient.seen", T0, "p1", "ab" * 16, {"key": "k", "dues": []})
    engine.on_event(other)
    assert m.calls == [] and stores["fake"].writes == []


def test_state_changes_are_reported_with_before_and_after() -> None:
    seen: list[tuple[Any, ...]] = []
    engine, _, _, _ = make()
    engine.on_change = lambda name, key, p, before, after: seen.append(
        (name, key, p, before and before["dues"], after and after["dues"])
    )
    engine.on_event(ev("k", T0, T0 + H), partition=1)
    engine.advance(T0 + 2 * H, partition=1)
    engine.rebuild([1])
    assert seen == [
        ("fake", "k", 1, None, [(T0 + H).isoformat()]),
        ("fake", "k", 1, [(T0 + H).isoformat()], []),
        ("fake", "k", 1, None, []),  # rebuilt: reported again, nothing before
    ]


def test_a_reread_input_is_skipped_and_a_deletion_keeps_its_offset() -> None:
    engine, (m,), stores, _ = make()
    engine.on_event(ev("k", T0, T0 + H), offset=4)
    engine.on_event(ev("k", T0, T0 + 2 * H), offset=4)  # read again: already in state
    assert engine.peek("fake", "k")[1:] == (4, {"dues": [(T0 + H).isoformat()],
                                                 "last_event": m.calls[0][2],
                                                 "drop_on_fire": False})  # fmt: skip
    engine.on_event(ev("k", T0 + MS, delete=True), offset=5)
    assert stores["fake"].writes[-1] == ("delete", "k", 0)
