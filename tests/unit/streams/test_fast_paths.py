"""Shortcuts around Faust's per-record bookkeeping: same effect, fewer calls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.streams import Stream

from streams.app import _cheap_producer_ebb
from streams.checkpoint import release_and_ack


class _Event:
    def __init__(self, log: list[Any], n: int) -> None:
        self.app = SimpleNamespace(consumer=object())
        self.message = n
        self._log, self._n = log, n

    def ack(self) -> bool:
        self._log.append(self._n)
        return True


def test_a_streams_ack_is_the_events_own() -> None:
    stream = object.__new__(Stream)  # Stream.ack itself would need a running stream
    log: list[Any] = []
    asyncio.run(release_and_ack(stream.ack, [_Event(log, 1), _Event(log, 2)]))
    assert log == [1, 2]


def test_any_other_ack_is_called_as_given() -> None:
    seen: list[Any] = []

    async def ack(event: Any) -> None:
        seen.append(event.message)

    log: list[Any] = []
    asyncio.run(release_and_ack(ack, [_Event(log, 3)]))
    assert (seen, log) == ([3], [])


def test_producer_ebb_waits_only_for_a_real_backlog() -> None:
    async def main() -> None:
        calls: list[str] = []

        async def original() -> None:
            calls.append("waited")

        buffer = SimpleNamespace(wait_until_ebb=original, max_messages=2, pending=asyncio.Queue())
        app = SimpleNamespace(
            conf=SimpleNamespace(producer_threaded=False), producer=SimpleNamespace(buffer=buffer)
        )
        _cheap_producer_ebb(app)  # type: ignore[arg-type]
        await buffer.wait_until_ebb()
        assert calls == []
        for n in range(3):
            buffer.pending.put_nowait(n)
        await buffer.wait_until_ebb()
        assert calls == ["waited"]

    asyncio.run(main())
