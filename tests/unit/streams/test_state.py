"""Changelog-backed state: written at the checkpoint, last write wins, deletions leave a stamp."""

from __future__ import annotations

import json
from typing import Any

from portal_pulse.engine import VALUE_HEADER
from streams.state import STATE_VALUES, ChangelogStore


class _Topic:
    def get_topic_name(self) -> str:
        return "app-sla-state-changelog"


class _Store:
    """A Faust memory store: its dict is ``.data``."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}


class _Table:
    """The two things ChangelogStore uses of a Faust table."""

    def __init__(self) -> None:
        self.data = _Store()
        self.changelog_topic = _Topic()


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
    return ChangelogStore(_Table(), rec), rec  # type: ignore[arg-type]


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
    s = ChangelogStore(_Table(), rec, STATE_VALUES)  # type: ignore[arg-type]
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
