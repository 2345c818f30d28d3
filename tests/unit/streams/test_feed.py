"""BatchQueue: what Faust's stream relay did for the agents, kept without the per-record relay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from mode.utils.queues import FlowControlEvent

from streams.feed import BatchQueue


@dataclass
class FakeApp:
    """The attributes BatchQueue reads from a Faust app."""

    consumer_generation_id: int = 1
    flow_control: FlowControlEvent = field(
        default_factory=lambda: FlowControlEvent(initially_suspended=False)
    )
    monitor: Any = field(default_factory=lambda: SimpleNamespace(stream_inbound_time={}))


def event(offset: int, partition: int = 0, generation: int = 1) -> Any:
    tp = TP("raw", partition)
    message = SimpleNamespace(tp=tp, offset=offset, generation_id=generation)
    return SimpleNamespace(message=message)


class Pressure:
    def __init__(self) -> None:
        self.high = 0
        self.dropped = 0

    def on_high(self) -> None:
        self.high += 1

    def on_drop(self) -> None:
        self.dropped += 1


def put(queue: BatchQueue, *events: Any, pressure: Pressure | None = None) -> None:
    pressure = pressure or Pressure()
    for e in events:
        queue.put_nowait_enhanced(
            e, on_pressure_high=pressure.on_high, on_pressure_drop=pressure.on_drop
        )


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


def test_a_full_batch_is_yielded_without_waiting_for_the_interval() -> None:
    async def main() -> None:
        queue = BatchQueue(FakeApp(), maxsize=100, wake_at=3)  # type: ignore[arg-type]
        batches = queue.batches(3, within=3600)
        put(queue, *(event(i) for i in range(5)))
        assert offsets(await asyncio.wait_for(anext(batches), 5)) == [0, 1, 2]
        await batches.aclose()

    asyncio.run(main())


def test_a_partial_batch_comes_after_the_interval_in_order() -> None:
    async def main() -> None:
        queue = BatchQueue(FakeApp(), maxsize=100, wake_at=10)  # type: ignore[arg-type]
        batches = queue.batches(10, within=0.01)
        put(queue, event(7), event(8, partition=1), event(9))
        assert offsets(await anext(batches)) == [7, 8, 9]
        put(queue, event(10))
        assert offsets(await anext(batches)) == [10]
        await batches.aclose()

    asyncio.run(main())


def test_records_of_an_earlier_generation_are_dropped_not_processed() -> None:
    app = FakeApp(consumer_generation_id=2)
    queue = BatchQueue(app, maxsize=100, wake_at=10)  # type: ignore[arg-type]
    put(queue, event(1, generation=1), event(2, generation=2), event(3, generation=1))
    assert offsets(queue.take(10)) == [2]
    assert queue.dropped_stale == 2
    assert queue.empty()


def test_taking_stamps_each_partitions_inbound_time() -> None:
    app = FakeApp()
    queue = BatchQueue(app, maxsize=100, wake_at=10)  # type: ignore[arg-type]
    put(queue, event(1, partition=0), event(1, partition=3))
    queue.take(10)
    assert set(app.monitor.stream_inbound_time) == {TP("raw", 0), TP("raw", 3)}


def test_a_piling_partition_is_paused_once_and_resumed_when_drained() -> None:
    queue = BatchQueue(FakeApp(), maxsize=10, wake_at=100)  # type: ignore[arg-type]
    pressure = Pressure()
    put(queue, *(event(i) for i in range(7)), pressure=pressure)
    assert pressure.high == 0  # below 80 % of maxsize
    put(queue, event(7), event(8), event(9), pressure=pressure)
    assert pressure.high == 1  # once, not per record
    queue.take(5)
    assert pressure.dropped == 0  # 5 left: above 40 %
    queue.take(1)
    assert pressure.dropped == 1
    put(queue, *(event(i) for i in range(10, 14)), pressure=pressure)
    assert pressure.high == 2  # paused again after the resume


def test_a_put_on_a_full_queue_waits_for_room() -> None:
    async def main() -> None:
        queue = BatchQueue(FakeApp(), maxsize=2, wake_at=100)  # type: ignore[arg-type]
        put(queue, event(0), event(1))
        assert queue.full()
        waiting = asyncio.ensure_future(queue.put(event(2)))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert offsets(queue.take(1)) == [0]
        await asyncio.wait_for(waiting, 5)
        assert offsets(queue.take(10)) == [1, 2]

    asyncio.run(main())


def test_nothing_is_taken_during_a_rebalance_and_the_queue_is_emptied_on_resume() -> None:
    async def main() -> None:
        app = FakeApp()
        queue = BatchQueue(app, maxsize=100, wake_at=2)  # type: ignore[arg-type]
        app.flow_control.suspend()
        put(queue, event(1), event(2))
        batches = queue.batches(2, within=0.01)
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)
        assert not pending.done()  # held while flow control is suspended
        app.flow_control.resume()  # clears what the old assignment fetched
        put(queue, event(5), event(6))
        assert offsets(await asyncio.wait_for(pending, 5)) == [5, 6]
        await batches.aclose()

    asyncio.run(main())


def test_faust_ending_the_actor_ends_the_batches() -> None:
    """At shutdown Faust throws StopAsyncIteration into the agent's channel queue."""

    async def main() -> None:
        queue = BatchQueue(FakeApp(), maxsize=100, wake_at=10)  # type: ignore[arg-type]
        batches = queue.batches(10, within=3600)
        pending = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0)
        queue._throw(StopAsyncIteration())
        try:
            await asyncio.wait_for(pending, 5)
        except StopAsyncIteration:
            pass
        else:
            raise AssertionError("the batches went on after the actor was told to stop")

    asyncio.run(main())
