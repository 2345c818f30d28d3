"""InOrder: each partition's records once and in offset order, whatever the stream delivers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.ordering import InOrder

TP0, TP1 = TP("t", 0), TP("t", 1)


class Consumer:
    def __init__(self, committed: dict[TP, int | None], earliest: int = 0) -> None:
        self._committed_offset = dict(committed)
        self.earliest = earliest
        self.seeks: list[tuple[TP, int]] = []

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.extend(partitions.items())


def _gate(committed: dict[TP, int | None], earliest: int = 0) -> tuple[InOrder, Any]:
    done = asyncio.Event()
    done.set()
    app = SimpleNamespace(
        rebalancing=False,
        consumer=Consumer(committed, earliest),
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=done)),
    )
    return InOrder(app, "test", reseek_interval=0.0), app  # type: ignore[arg-type]


def _events(*where: tuple[TP, int]) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=o)) for tp, o in where]


def _offsets(events: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.tp.partition, e.message.offset) for e in events]


def test_records_from_the_committed_offset_on_are_admitted_in_order() -> None:
    gate, _ = _gate({TP0: 5, TP1: None})  # Faust keeps a committed 0 as None
    out = gate.admit(_events((TP0, 5), (TP1, 0), (TP0, 6), (TP1, 1)))
    assert _offsets(out.fresh) == [(0, 5), (1, 0), (0, 6), (1, 1)]
    assert not out.seen and not out.gaps and out.held == 0


def test_a_second_delivery_is_acknowledged_without_processing() -> None:
    gate, _ = _gate({TP0: 5})
    gate.admit(_events((TP0, 5), (TP0, 6), (TP0, 7)))
    out = gate.admit(_events((TP0, 3), (TP0, 6), (TP0, 7), (TP0, 8)))
    assert _offsets(out.seen) == [(0, 3), (0, 6), (0, 7)]
    assert _offsets(out.fresh) == [(0, 8)]
    assert _offsets(out.to_ack) == [(0, 3), (0, 6), (0, 7), (0, 8)]


def test_a_record_past_a_gap_is_held_and_the_partition_read_again() -> None:
    """The fault seen in the suite: offset 831 arriving before 87…830 were re-read."""
    gate, app = _gate({TP0: 87, TP1: 0})
    out = gate.admit(_events((TP0, 831), (TP1, 0), (TP0, 87), (TP1, 1)))
    assert _offsets(out.fresh) == [(1, 0), (1, 1)], "the other partition goes on"
    assert out.gaps == {TP0: 87} and out.held == 2, "nothing of partition 0 after the gap"
    asyncio.run(gate.read_again(out.gaps))
    assert app.consumer.seeks == [(TP0, 87)]
    again = gate.admit(_events((TP0, 87), (TP0, 88)))
    assert _offsets(again.fresh) == [(0, 87), (0, 88)]


def test_records_gone_to_retention_are_skipped_from_where_the_log_starts() -> None:
    gate, app = _gate({TP0: 10}, earliest=50)
    out = gate.admit(_events((TP0, 50), (TP0, 51)))
    assert out.gaps == {TP0: 10}
    asyncio.run(gate.read_again(out.gaps))
    assert app.consumer.seeks == [(TP0, 50)]
    again = gate.admit(_events((TP0, 50), (TP0, 51)))
    assert _offsets(again.fresh) == [(0, 50), (0, 51)]


def test_nothing_is_admitted_before_recovery_has_sought_to_the_committed_offsets() -> None:
    gate, app = _gate({TP0: 0})
    app.tables.recovery.completed.clear()
    out = gate.admit(_events((TP0, 0), (TP0, 1)))
    assert not out.fresh and not out.seen and out.held == 2
    app.tables.recovery.completed.set()
    app.rebalancing = True
    assert gate.admit(_events((TP0, 0))).held == 1
    app.rebalancing = False
    gate.reset()
    assert _offsets(gate.admit(_events((TP0, 0))).fresh) == [(0, 0)]


def test_records_held_before_the_seek_are_read_again_once_ready() -> None:
    """Faust seeks only partitions with a committed offset; the gate seeks the others."""
    gate, app = _gate({TP0: None, TP1: 4})
    app.consumer.assignment = lambda: {TP0, TP1}
    app.tables.recovery.completed.clear()
    assert gate.admit(_events((TP0, 0), (TP1, 4))).held == 2
    asyncio.run(gate.resume())
    assert app.consumer.seeks == [], "not before the consumer has sought"
    app.tables.recovery.completed.set()
    asyncio.run(gate.resume())
    assert sorted(app.consumer.seeks) == [(TP0, 0), (TP1, 4)]
    asyncio.run(gate.resume())
    assert len(app.consumer.seeks) == 2, "once"
