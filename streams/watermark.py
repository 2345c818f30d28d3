"""Event-time watermark across the raw topics, carried to the processors in a message header.

Sources are separate topics consumed at different speeds; the processors must not let a fast
source's event time fire deadlines while a slower source still holds earlier events. The
watermark is the lowest latest-event-time over raw partitions that still have a backlog (or the
highest, once all are caught up), and it never goes back.

With several workers sharing the raw partitions (``--role process``), each ingest knows only the
raw partitions it holds. Its watermark therefore travels with a second header, ``pp-wm-cover``:
the raw partitions it speaks for, as a bit mask over every raw partition of the pipeline
(``raw_index``), and whether all of them were caught up (then its watermark is their highest
time, not the lowest of a backlog). The processors keep, per clean partition, the highest
watermark heard for each raw partition (``combine``): while any of them has a backlog the clock
is the lowest over all of them, caught up or not; once none has one, the highest.

A worker's "caught up" is true when it says it and may be stale a moment later: records can
arrive on its partitions (or it can die) while another worker's sources run ahead. So its claim
never lets the clock pass the time its own sources had reached while another worker still has
a backlog; the claim only counts once every raw partition is caught up, and records produced
after that are later in event time. A single worker covers every raw partition, so its clocks
follow its watermark exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

__all__ = [
    "COVER_HEADER",
    "HEADER",
    "SOURCE_HEADER",
    "Watermark",
    "combine",
    "cover_value",
    "header_value",
    "raw_index",
    "read_cover",
    "read_header",
    "read_source",
    "source_value",
]

HEADER = "pp-watermark"


class Watermark:
    def __init__(self) -> None:
        self.latest: dict[TP, datetime] = {}
        self.value: datetime | None = None
        self.caught_up = False  # at the last compute: no assigned partition had a backlog

    def observe(self, tp: TP, at: datetime) -> None:
        current = self.latest.get(tp)
        if current is None or at > current:
            self.latest[tp] = at

    def compute(self, assigned: Iterable[TP], caught_up: Callable[[TP], bool]) -> datetime | None:
        lows: list[datetime] = []
        self.caught_up = False
        for tp in assigned:
            if caught_up(tp):
                continue
            at = self.latest.get(tp)
            if at is None:
                return self.value  # a backlog we know nothing about yet: hold
            lows.append(at)
        self.caught_up = not lows
        candidate = min(lows) if lows else max(self.latest.values(), default=None)
        if candidate is not None and (self.value is None or candidate > self.value):
            self.value = candidate
        return self.value


def header_value(at: datetime) -> bytes:
    return str(int(at.timestamp() * 1000)).encode()


Headers = Mapping[str, Any] | Iterable[tuple[str, bytes]] | None


def _header(headers: Headers, wanted: str) -> str | None:
    """The text of header ``wanted``, or None when absent or empty."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == wanted and value:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def read_header(headers: Headers) -> datetime | None:
    value = _header(headers, HEADER)
    return None if value is None else datetime.fromtimestamp(int(value) / 1000, UTC)


SOURCE_HEADER = "pp-src"


def source_value(topic: str, partition: int, offset: int) -> bytes:
    """The raw position a clean record was made from: ``topic|partition|offset``."""
    return f"{topic}|{partition}|{offset}".encode()


def read_source(headers: Headers) -> tuple[str, int] | None:
    """``("topic|partition", offset)`` of the raw record behind a clean one, if stamped."""
    text = _header(headers, SOURCE_HEADER)
    if text is None:
        return None
    where, _, offset = text.rpartition("|")
    return where, int(offset)


COVER_HEADER = "pp-wm-cover"


def raw_index(topics: Iterable[str], partitions: int) -> dict[TP, int]:
    """Every raw partition of the pipeline and its bit in a cover mask."""
    tps = [TP(topic, p) for topic in sorted(topics) for p in range(partitions)]
    return {tp: i for i, tp in enumerate(tps)}


def cover_value(tps: Iterable[TP], index: Mapping[TP, int], caught_up: bool = False) -> bytes:
    """``<hex mask of tps>;<1 if all caught up else 0>``."""
    mask = 0
    for tp in tps:
        bit = index.get(TP(tp.topic, tp.partition))
        if bit is not None:
            mask |= 1 << bit
    return f"{mask:x};{int(caught_up)}".encode()


def read_cover(headers: Headers) -> tuple[int, bool] | None:
    """The cover of a record's watermark: (mask, all caught up); None (all partitions, as one
    worker) when absent."""
    text = _header(headers, COVER_HEADER)
    if text is None:
        return None
    mask, _, done = text.partition(";")
    return int(mask, 16), done == "1"


def combine(
    latest: list[int], caught_up: list[bool], at: datetime, cover: tuple[int, bool] | None
) -> datetime | None:
    """Record watermark ``at`` for the raw partitions of ``cover`` (None: all of them, backlog
    unknown) in ``latest`` (ms per raw partition, -1 unknown) and ``caught_up``; returns the
    watermark over all raw partitions once each is known: the lowest of them while any has a
    backlog, or the highest when none has one (module docstring: why caught-up partitions
    still count while another has a backlog)."""
    ms = int(at.timestamp() * 1000)
    mask, done = cover if cover is not None else (-1, False)
    for i, seen in enumerate(latest):
        if (mask >> i) & 1:
            latest[i] = max(seen, ms)
            caught_up[i] = done
    if not latest or min(latest) < 0:
        return None
    low = max(latest) if all(caught_up) else min(latest)
    return at if low == ms else datetime.fromtimestamp(low / 1000, UTC)
