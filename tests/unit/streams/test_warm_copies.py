"""Standby copies keep changelog bytes and decode them at take-over: the same table as reading
every record in order (what a restore from the changelog does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.state import JSON_VALUES, StateTable
from streams.warm_copies import WarmCopies


@dataclass
class Record:
    """What librdkafka hands over, as far as the copies read it."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


# What the pipeline writes: one spelling per key, values that parse, tombstones.
KEYS = [b'"a"', b'"b"', b'["P1","e1"]', b'["P1","e2"]']
VALUES = [None, b'{"p":0,"s":1,"o":3}', b'{"p":0,"s":[1,2],"o":4}', b"7"]


def _eager(table: StateTable, records: list[Record]) -> dict[Any, Any]:
    data: dict[Any, Any] = {}
    for r in records:
        table.apply(data, r.key(), r.value())
    return data


@given(
    st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=40),
    st.integers(min_value=1, max_value=5),
)
def test_copy_equals_reading_every_record(
    writes: list[tuple[bytes, bytes | None]], batch: int
) -> None:
    table = StateTable("app", "t", frozenset(["in"]), JSON_VALUES)
    copies = WarmCopies({}, [table])
    records = [Record(table.topic, 0, i, k, v) for i, (k, v) in enumerate(writes)]
    for start in range(0, len(records), batch):
        copies._apply(records[start : start + batch])
    copy = copies.copy_of(table.topic, 0)
    if not records:
        assert copy is None
        return
    assert copy == (_eager(table, records), len(records))


def test_records_the_pipeline_never_writes_are_skipped_and_counted() -> None:
    table = StateTable("app", "t", frozenset(["in"]), JSON_VALUES)
    copies = WarmCopies({}, [table])
    good = b'{"p":0,"s":1,"o":1}'
    copies._apply(
        [
            Record(table.topic, 0, 0, None, good),  # no key
            Record(table.topic, 0, 1, b"not json", good),
            Record(table.topic, 0, 2, b"{}", good),  # an object cannot be a key
            Record(table.topic, 0, 3, b'"v"', b"not json"),
            Record(table.topic, 0, 4, b'"k"', good),
        ]
    )
    assert copies.copy_of(table.topic, 0) == ({"k": {"p": 0, "s": 1, "o": 1}}, 5)
    assert copies.bad_records == 4


def test_tombstone_removes_and_later_write_returns() -> None:
    table = StateTable("app", "t", frozenset(["in"]), JSON_VALUES)
    copies = WarmCopies({}, [table])
    v1, v2 = b'{"p":0,"s":1,"o":1}', b'{"p":0,"s":2,"o":2}'
    copies._apply(
        [
            Record(table.topic, 1, 10, b'"x"', v1),
            Record(table.topic, 1, 11, b'"y"', v1),
            Record(table.topic, 1, 12, b'"x"', None),
            Record(table.topic, 1, 13, b'"y"', v2),
        ]
    )
    assert copies.copy_of(table.topic, 1) == ({"y": {"p": 0, "s": 2, "o": 2}}, 14)
    assert copies.copy_of(table.topic, 0) is None
