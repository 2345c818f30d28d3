"""The stall watchdog: re-reads a partition only when its commits stopped short and nothing moves."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams import stall
from streams.progress import Progress
from streams.stall import StallWatchdog

TOPIC = "p.events.clean"


class Consumer:
    def __init__(self, highwater: int, committed: int | None) -> None:
        self.tp = TP(TOPIC, 0)
        self.high = highwater
        self._committed_offset = {self.tp: committed}
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return {self.tp, TP("p.some-changelog", 0)}

    def highwater(self, tp: TP) -> int:
        return self.high

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.extend(partitions.items())


def _watchdog(consumer: Consumer) -> tuple[StallWatchdog, Any]:
    recovered = asyncio.Event()
    recovered.set()
    app = SimpleNamespace(
        rebalancing=False,
        consumer=consumer,
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=recovered)),
    )
    rt = SimpleNamespace(progress={"processors": Progress([TOPIC])}, batches_in_flight=0)
    return StallWatchdog(app, rt, stall_seconds=10.0), rt  # type: ignore[arg-type]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(stall.time, "monotonic", lambda: now[0])
    return now


def _check(dog: StallWatchdog) -> None:
    asyncio.run(dog.check())


def test_a_partition_whose_commits_stopped_short_is_read_again(clock: list[float]) -> None:
    consumer = Consumer(highwater=100, committed=40)
    dog, _ = _watchdog(consumer)
    _check(dog)
    clock[0] += 9
    _check(dog)
    assert consumer.seeks == []
    clock[0] += 2
    _check(dog)
    assert consumer.seeks == [(consumer.tp, 40)]
    assert dog.reseeks == 1
    _check(dog)
    assert len(consumer.seeks) == 1, "not again before another stall period"


def test_moving_commits_or_processing_is_not_a_stall(clock: list[float]) -> None:
    consumer = Consumer(highwater=100, committed=40)
    dog, rt = _watchdog(consumer)
    for step in range(10):
        _check(dog)
        clock[0] += 5
        if step % 2:
            consumer._committed_offset[consumer.tp] = 41 + step
        else:
            rt.progress["processors"].done(consumer.tp, 60 + step)
    assert consumer.seeks == []


def test_a_caught_up_partition_or_a_batch_in_flight_is_left_alone(clock: list[float]) -> None:
    consumer = Consumer(highwater=100, committed=100)
    dog, _ = _watchdog(consumer)
    for _ in range(5):
        _check(dog)
        clock[0] += 20
    assert consumer.seeks == []

    waiting = Consumer(highwater=100, committed=None)  # Faust's None: nothing committed
    dog, rt = _watchdog(waiting)
    rt.batches_in_flight = 1  # e.g. an insert retried while ClickHouse is down
    for _ in range(5):
        _check(dog)
        clock[0] += 20
    assert waiting.seeks == []
    rt.batches_in_flight = 0
    _check(dog)
    assert waiting.seeks == [(waiting.tp, 0)]


def test_a_partition_waiting_behind_a_busy_agent_is_not_a_stall(clock: list[float]) -> None:
    """A large backlog: the agent works on other partitions for longer than the stall period."""
    consumer = Consumer(highwater=100, committed=None)
    dog, rt = _watchdog(consumer)
    other = TP(TOPIC, 1)
    for offset in range(30):
        _check(dog)
        clock[0] += 0.5
        rt.progress["processors"].done(other, offset)
    assert consumer.seeks == []
    clock[0] += 1.5  # the agent has had nothing to do for a while: now it is a stall
    _check(dog)
    assert consumer.seeks == [(consumer.tp, 0)]
