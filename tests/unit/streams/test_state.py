"""Changelog-backed state: written at the checkpoint, last write wins, deletions leave a stamp."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portal_pulse.engine import VALUE_HEADER
from streams.state import MARKER_VALUES, STATE_VALUES, ChangelogStore, StateTable

BY = frozenset({"app.events.clean"})


class _Recorder:
    """Stands in for the librdkafka producer: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, int]] = []

    def send(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        self.sent.append((json.loads(key), json.loads(value), partition))

    def send_tombstone(self, topic: str, key: bytes, partition: int) -> None:
        self.sent.append((json.loads(key), None, partition))


def store() -> tuple[ChangelogStore, _Recorder]:
    rec = _Recorder()
    return ChangelogStore(StateTable("app", "sla-state", BY), rec), rec  # type: ignore[arg-type]


def test_nothing_is_sent_before_the_checkpoint_and_each_key_once() -> None:
    s, rec = store()
    s.put("k", {"p": 1, "s": {"n": 1}, "o": 10}, 1)
    s.put("k", {"p": 1, "s": {"n": 2}, "o": 11}, 1)
    assert rec.sent == []
    assert s.write_changes() == 1
    assert rec.sent == [("k", {"p": 1, "s": {"n": 2}, "o": 11}, 1)]
    assert s.write_changes() == 0


def test_a_deletion_is_a_stamped_stub_then_a_tombstone() -> None:
    s, rec = store()
    s.put("k", {"p": 0, "s": {"n": 1}, "o": 3}, 0)
    s.write_changes()
    s.delete("k", 0, offset=4)
    s.write_changes()
    assert rec.sent[-1] == ("k", {"p": 0, "s": None, "o": 4}, 0)
    assert s.get("k") == {"p": 0, "s": None, "o": 4}
    s.write_changes()  # the next checkpoint: its marker has moved past offset 4
    assert rec.sent[-1] == ("k", None, 0)
    assert s.get("k") is None


def test_a_key_written_again_after_its_stub_is_not_tombstoned() -> None:
    s, rec = store()
    s.delete("k", 0, offset=4)
    s.write_changes()
    s.put("k", {"p": 0, "s": {"n": 1}, "o": 5}, 0)
    s.write_changes()
    assert rec.sent[-1] == ("k", {"p": 0, "s": {"n": 1}, "o": 5}, 0)
    assert s.get("k") is not None


def test_forget_drops_unwritten_changes_of_lost_partitions() -> None:
    s, rec = store()
    s.put("a", {"p": 0, "s": 1}, 0)
    s.put("b", {"p": 1, "s": 1}, 1)
    s.forget({1})
    s.write_changes()
    assert [k for k, _, _ in rec.sent] == ["a"]


class _BytesRecorder(_Recorder):
    def send(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        self.sent.append((json.loads(key), value, partition))


def test_engine_states_go_to_the_changelog_as_they_are_held() -> None:
    rec = _BytesRecorder()
    s = ChangelogStore(StateTable("app", "sla-state", BY, STATE_VALUES), rec)  # type: ignore[arg-type]
    value = VALUE_HEADER.pack(2, 9) + b"state"
    s.put("k", value, 2)
    s.write_changes()
    assert rec.sent == [("k", value, 2)]
    s.delete("k", 2, offset=10)
    s.write_changes()
    assert rec.sent[-1] == ("k", VALUE_HEADER.pack(2, 10), 2)  # the stub: offset, no state
    s.write_changes()
    assert rec.sent[-1] == ("k", None, 2)
    assert s.get("k") is None


def test_a_table_reads_back_what_its_store_wrote() -> None:
    """Recovery (streams.consumer_loop) replays the changelog through ``apply``: the last
    record of a key wins, a tombstone deletes it, a list key comes back as a tuple."""
    table = StateTable("app", "dedup", BY)
    assert table.topic == "app-dedup-changelog"
    data: dict[object, object] = {}
    table.apply(data, b'["P001","e1"]', b'[0,"00000000000000ff"]')
    table.apply(data, b'"k"', b'{"n":1}')
    table.apply(data, b'"k"', b'{"n":2}')
    table.apply(data, b'"gone"', b"1")
    table.apply(data, b'"gone"', None)
    assert data == {("P001", "e1"): [0, "00000000000000ff"], "k": {"n": 2}}


def test_engine_state_bytes_come_back_unchanged() -> None:
    table = StateTable("app", "sla-state", BY, STATE_VALUES)
    data: dict[object, object] = {}
    table.apply(data, b'"k"', b"\x00\x01raw")
    assert data == {"k": b"\x00\x01raw"}


@pytest.mark.parametrize(
    ("key", "value"),
    [(None, b"1"), (b"not json", b"1"), (b'"k"', b"{"), (b'{"a":1}', b"1"), (b"[[1]]", b"1")],
)
def test_a_record_this_pipeline_did_not_write_is_refused(key: bytes | None, value: bytes) -> None:
    with pytest.raises(ValueError):
        StateTable("app", "live", BY).apply({}, key, value)


def test_a_marker_before_its_partition_clock_started_is_not_a_deletion_stub() -> None:
    """A partition marker holds the last offset handled and the raw positions seen; written
    before any watermark arrived its clock is None. It must survive the next checkpoint: read as
    a stub it was tombstoned, and a worker restarting after that took second copies of raw
    records for new events (the fault suite's SIGTERM-twice scenario)."""
    rec = _Recorder()
    markers = ChangelogStore(StateTable("app", "clocks", BY, MARKER_VALUES), rec)  # type: ignore[arg-type]
    marker = {"p": 0, "s": None, "rs": None, "o": 1235, "src": {"raw.portal|0": 377}}
    markers.put("0", marker, 0)
    markers.write_changes()
    markers.write_changes()  # the next checkpoint
    markers.write_changes()
    assert rec.sent == [("0", marker, 0)]
    assert markers.get("0") == marker

    # The same value in a store of stamped states is a deletion stub: tombstoned next time.
    rec = _Recorder()
    live = ChangelogStore(StateTable("app", "live-state", BY), rec)  # type: ignore[arg-type]
    live.put("0", marker, 0)
    live.write_changes()
    live.write_changes()
    assert rec.sent[-1] == ("0", None, 0)
