"""The deadline index against a plain model: every current deadline before the clock comes out,
in due order, whatever was pushed, superseded or compacted in between."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from portal_pulse.deadlines import SLOT_BITS, DeadlineIndex

SLOT = 1 << SLOT_BITS
KEYS = [f"k{i}" for i in range(12)]

# An operation: move a key's deadline (None: it has none any more), or move the clock to a time.
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.sampled_from(KEYS),
            st.one_of(st.none(), st.integers(0, 6 * SLOT)),
        ),
        st.tuples(st.just("advance"), st.integers(0, 7 * SLOT)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.booleans())
def test_due_entries_come_out_in_order_exactly_once(operations: list, small: bool) -> None:
    index = DeadlineIndex()
    if small:
        index._compact_at = 3  # compact all the time
    current: dict[str, int | None] = {}
    clock = 0
    for op in operations:
        if op[0] == "set":
            _, key, due = op
            current[key] = due
            if due is not None:
                index.push(due, key)  # as the engine does: a new due, a new entry
            index.compact_if_needed(current.get)
            continue
        clock = max(clock, op[1])
        fired: list[tuple[int, str]] = []
        for due, key in index.pop_due(clock, current.get):
            if current.get(key) != due:
                continue  # superseded: the caller checks against the state
            fired.append((due, key))
            current[key] = None  # fired: this model's machines have one deadline each
        expected_left = {k for k, d in current.items() if d is not None and d < clock}
        assert expected_left == set()
        assert fired == sorted(fired)
        assert all(due < clock for due, _ in fired)  # strictly before the clock
        assert len({k for _, k in fired}) == len(fired)
    # Nothing current is lost: everything still pending comes out once the clock passes it.
    pending = sorted((d, k) for k, d in current.items() if d is not None)
    out = [(d, k) for d, k in index.pop_due(8 * SLOT, current.get) if current.get(k) == d]
    assert sorted(set(out)) == pending


def test_entries_of_a_staged_slot_go_straight_to_the_heap() -> None:
    index = DeadlineIndex()
    index.push(SLOT + 10, "a")
    assert list(index.pop_due(SLOT + 5, {"a": SLOT + 10}.get)) == []  # slot staged, not due
    index.push(SLOT + 7, "b")
    assert list(index.pop_due(SLOT + 11, {"a": SLOT + 10, "b": SLOT + 7}.get)) == [
        (SLOT + 7, "b"),
        (SLOT + 10, "a"),
    ]
    assert len(index) == 0


def test_an_entry_whose_key_moved_on_is_dropped_when_its_slot_comes() -> None:
    index = DeadlineIndex()
    index.push(10, "k")
    index.push(3 * SLOT, "k")  # the same key, due later now
    assert len(index) == 2
    assert list(index.pop_due(SLOT, {"k": 3 * SLOT}.get)) == []
    assert len(index) == 1
