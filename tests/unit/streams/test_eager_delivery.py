"""GatedConsumer.wait_first: a delivery that needs no wait runs inline; one that waits is still
interrupted by a rebalance (``suspend_flow``) exactly as Faust's general path does."""

from __future__ import annotations

import asyncio
from typing import Any

from mode.utils.locks import Event as ModeEvent

from streams.checkpoint import GatedConsumer, _Resumed


def _consumer() -> GatedConsumer:
    """Just the state ``wait_first`` reads (a real consumer needs a running Faust app)."""
    consumer = object.__new__(GatedConsumer)
    consumer.suspend_flow = asyncio.Event()
    consumer._stopped = ModeEvent()
    consumer._crashed = ModeEvent()
    consumer._loop = asyncio.get_running_loop()
    return consumer


class Tracked:
    """A delivery coroutine that records how far it got."""

    def __init__(self, wait_on: asyncio.Future[Any] | None = None) -> None:
        self.wait_on = wait_on
        self.steps: list[str] = []

    async def deliver(self) -> str:
        self.steps.append("start")
        try:
            if self.wait_on is not None:
                await self.wait_on
            self.steps.append("delivered")
            return "ok"
        finally:
            self.steps.append("finally")


def test_a_delivery_that_needs_no_wait_runs_inline() -> None:
    async def main() -> None:
        consumer = _consumer()
        tracked = Tracked()
        other = consumer.suspend_flow.wait()
        deliver = tracked.deliver()
        winners, results, stopped = await consumer.wait_first(deliver, other)
        assert winners == [deliver] and results == ["ok"] and not stopped
        assert tracked.steps == ["start", "delivered", "finally"]
        assert other.cr_frame is None  # closed, never left pending

    asyncio.run(main())


def test_a_delivery_that_waits_finishes_through_the_general_path() -> None:
    async def main() -> None:
        consumer = _consumer()
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracked = Tracked(room)
        asyncio.get_running_loop().call_later(0.01, room.set_result, None)
        _, results, stopped = await consumer.wait_first(
            tracked.deliver(), consumer.suspend_flow.wait()
        )
        assert results == ["ok"] and not stopped
        assert tracked.steps == ["start", "delivered", "finally"]

    asyncio.run(main())


def test_a_rebalance_interrupts_a_delivery_that_waits() -> None:
    async def main() -> None:
        consumer = _consumer()
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracked = Tracked(never)
        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        await consumer.wait_first(tracked.deliver(), consumer.suspend_flow.wait())
        await asyncio.sleep(0)  # the cancelled delivery unwinds
        assert tracked.steps == ["start", "finally"]  # cancelled, never delivered

    asyncio.run(main())


def test_with_the_flow_suspended_nothing_runs_inline() -> None:
    async def main() -> None:
        consumer = _consumer()
        consumer.suspend_flow.set()
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tracked = Tracked(never)
        await consumer.wait_first(tracked.deliver(), consumer.suspend_flow.wait())
        await asyncio.sleep(0)
        assert "delivered" not in tracked.steps

    asyncio.run(main())


def test_resumed_passes_values_and_exceptions_through() -> None:
    async def main() -> None:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def body() -> int:
            value = await fut
            await asyncio.sleep(0)
            return value * 2

        coro = body()
        first = coro.send(None)
        assert first is fut
        fut.set_result(21)
        assert await _Resumed(coro, first) == 42

        failing: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def raises() -> int:
            return await failing

        coro2 = raises()
        first2 = coro2.send(None)
        failing.set_exception(ValueError("boom"))
        try:
            await _Resumed(coro2, first2)
        except ValueError as exc:
            assert str(exc) == "boom"
        else:
            raise AssertionError("the exception was swallowed")

    asyncio.run(main())
