"""The de-duplication memory's changelog: its records, and a restore from them (new and old)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.ingest import Deduplicator, Remembered, Verdict
from streams.ingest_agent import entries, record, record_key


def recovered(records: list[tuple[bytes, bytes]]) -> dict[Any, Any]:
    """The table's data after recovery: keys and values JSON-decoded, a list key as a tuple
    (what Faust's table does with a JSON list key), the last record of a key winning."""
    data: dict[Any, Any] = {}
    for key, value in records:
        decoded = json.loads(key)
        data[tuple(decoded) if isinstance(decoded, list) else decoded] = json.loads(value)
    return data


def test_a_record_names_practice_and_event_and_carries_partition_and_fingerprint() -> None:
    key, value = record("P002", "r1", 3, 0xFEDCBA9876543210)
    assert key == b'["P002","r1"]'
    assert value == b'[3,"fedcba9876543210"]'
    assert list(entries(recovered([(key, value)]))) == [
        Remembered("P002", "r1", 3, 0xFEDCBA9876543210)
    ]


def test_a_record_stays_small() -> None:
    """Over an old record (``"<event_id>"`` → ``<partition>``): the practice id, 16 hex digits
    of fingerprint and 10 bytes of JSON punctuation, nothing more."""
    event_id = "e" * 36
    old = len(json.dumps(event_id)) + len(b"11")
    key, value = record("P001", event_id, 11, 2**64 - 1)
    assert len(key) + len(value) == old + len("P001") + 16 + 10


def test_an_older_changelog_restores() -> None:
    """Written before practices were part of the key: ``"<event_id>"`` → ``<partition>``."""
    old = [(json.dumps("ev-1").encode(), b"3"), (json.dumps("a:b|c").encode(), b"0")]
    assert list(entries(recovered(old))) == [
        Remembered(None, "ev-1", 3, None),
        Remembered(None, "a:b|c", 0, None),
    ]
    # An eviction's tombstone has the old key, so compaction removes the old record.
    assert record_key(None, "ev-1") == json.dumps("ev-1").encode()
    assert record_key(None, "é\u2028") == json.dumps("é\u2028").encode()


def test_old_and_new_records_restore_side_by_side_and_their_keys_never_meet() -> None:
    """An old id "P002:r1" and the new (P002, r1) are two records, one entry each."""
    records = [
        (json.dumps("P002:r1").encode(), b"1"),
        record("P002", "r1", 1, 42),
        record("ATTACKER", "r1", 2, 7),
    ]
    data = recovered(records)
    assert len(data) == 3
    dedup = Deduplicator(10)
    dedup.restore(entries(data))
    assert len(dedup) == 3
    assert dedup.check("P002", "r1", 42) is Verdict.DUPLICATE
    assert dedup.check("P002", "r1", 43) is Verdict.CONFLICT
    assert dedup.check("ATTACKER", "r1", 7) is Verdict.DUPLICATE
    assert dedup.check("P001", "P002:r1", 0) is Verdict.DUPLICATE, "the old id, as it was then"
    assert dedup.check("P001", "r1", 0) is Verdict.NEW


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (["P:1", "x"], [0, "0" * 16]),  # not a practice id
        (["P1", "x", "y"], [0, "0" * 16]),
        (["P1", 5], [0, "0" * 16]),
        (["P1", "x"], [0, "0" * 15]),
        (["P1", "x"], [0, "z" * 16]),
        (["P1", "x"], [-1, "0" * 16]),
        (["P1", "x"], [2**31, "0" * 16]),
        (["P1", "x"], [True, "0" * 16]),
        (["P1", "x"], {"partition": 0}),
        (["P1", "x"], 3),
        ("x", "3"),
        ("x", [0, "0" * 16]),
        ("x", -1),
        ("x", True),
        (7, 0),
    ],
)
def test_a_record_of_another_shape_is_skipped_not_a_crash(key: Any, value: Any) -> None:
    data = recovered([(json.dumps(key).encode(), json.dumps(value).encode())])
    good = record("P1", "ok", 0, 1)
    data.update(recovered([good]))
    assert list(entries(data)) == [Remembered("P1", "ok", 0, 1)]


@given(
    st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]) | st.sampled_from('"\\\x00é')),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**64 - 1),
)
def test_records_are_the_json_earlier_versions_wrote(
    practice_id: str, event_id: str, partition: int, fingerprint: int
) -> None:
    """Built without ``json.dumps`` for speed, byte for byte what it wrote: compaction and a
    restore rely on equal keys for equal entries across versions."""
    key, value = record(practice_id, event_id, partition, fingerprint)
    assert key == json.dumps([practice_id, event_id], separators=(",", ":")).encode()
    assert value == json.dumps([partition, f"{fingerprint:016x}"], separators=(",", ":")).encode()
    assert record_key(None, event_id) == json.dumps(event_id).encode()
