"""A batch cut short leaves memory ahead of what was written: the checkpoint then writes nothing.

The fault suite's "SIGTERM twice" lost every `events` row of a worker this way: its batch was
cancelled by the stop while the rows went to ClickHouse, then the processors' timer wrote the
batch's state and partition markers, and the next worker skipped the batch as done.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from streams.checkpoint import Checkpoint, CheckpointAbandoned
from streams.state import ChangelogStore, StateTable


class _Recorder:
    """Stands in for the delivering producer: records what would be sent and flushed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.flushes = 0

    def send(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        self.sent.append((json.loads(key), json.loads(value)))

    def send_tombstone(self, topic: str, key: bytes, partition: int) -> None:
        self.sent.append((json.loads(key), None))

    async def flush(self) -> None:
        self.flushes += 1


def _checkpoint() -> tuple[Checkpoint, ChangelogStore, ChangelogStore, _Recorder]:
    rec = _Recorder()
    by = frozenset({"app.events.clean"})
    state = ChangelogStore(StateTable("app", "sla-state", by), rec)  # type: ignore[arg-type]
    markers = ChangelogStore(StateTable("app", "markers", by), rec)  # type: ignore[arg-type]
    return Checkpoint(rec, [state], [markers]), state, markers, rec  # type: ignore[arg-type]


def test_a_completed_batch_writes_its_state_then_its_marker() -> None:
    async def run() -> None:
        cp, state, markers, rec = _checkpoint()
        async with cp.batch():
            state.put("k", {"p": 0, "s": {"n": 1}, "o": 7}, 0)
            markers.put("0", {"p": 0, "o": 7}, 0)
            await cp.complete()
        assert rec.sent == [("k", {"p": 0, "s": {"n": 1}, "o": 7}), ("0", {"p": 0, "o": 7})]
        assert cp.abandoned is None and cp.completed == 1

    asyncio.run(run())


def test_a_batch_cancelled_by_a_stop_is_never_written_by_a_later_checkpoint() -> None:
    async def run() -> None:
        cp, state, markers, rec = _checkpoint()
        rows_written = asyncio.Event()  # the batch waits for ClickHouse, which never answers

        async def batch() -> None:
            async with cp.batch():
                state.put("k", {"p": 0, "s": {"n": 1}, "o": 7}, 0)
                markers.put("0", {"p": 0, "o": 7}, 0)
                await rows_written.wait()
                await cp.complete()

        task = asyncio.create_task(batch())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cp.abandoned is not None and "CancelledError" in cp.abandoned

        # A timer's checkpoint after that: refused, and nothing of the batch goes out.
        with pytest.raises(CheckpointAbandoned):
            await cp.complete()
        with pytest.raises(CheckpointAbandoned):
            async with cp.batch():
                pass
        assert rec.sent == [] and rec.flushes == 0
        assert not cp.lock.locked()  # revocation hooks still get the lock

    asyncio.run(run())


def test_a_batch_that_fails_abandons_the_checkpoint_too() -> None:
    async def run() -> None:
        cp, state, _, rec = _checkpoint()
        with pytest.raises(RuntimeError, match="sink gave up"):
            async with cp.batch():
                state.put("k", {"p": 0, "s": {"n": 1}, "o": 7}, 0)
                raise RuntimeError("sink gave up")
        with pytest.raises(CheckpointAbandoned, match="RuntimeError"):
            await cp.complete()
        assert rec.sent == []

    asyncio.run(run())
