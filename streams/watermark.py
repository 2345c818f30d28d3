"""Event-time watermark across the raw topics, carried to the processors in a message header.

Sources are separate topics consumed at different speeds; the processors must not let a fast
source's event time fire deadlines while a slower source still holds earlier events. The
watermark is the lowest latest-event-time over raw partitions that still have a backlog (or the
highest, once all are caught up), and it never goes back.

With several workers sharing the raw partitions (``--role process``), each ingest knows only the
raw partitions it holds. Its watermark therefore travels with a second header, ``pp-wm-cover``:
the raw partitions it speaks for, as a bit mask over every raw partition of the pipeline
(``raw_index``), and whether the whole pipeline is caught up. The processors keep, per clean
partition, the highest watermark heard for each raw partition (``combine``): the clock is the
lowest of them, or the highest once the pipeline is caught up.

"Caught up" is a claim about every raw partition, made at one moment: a worker makes it only
when its own partitions are read to their ends and the group has committed the other workers'
partitions to their ends (streams/group_lag.py), and only in an announcement sent right after
that check (never on a record's header, which may be read long after). A commit follows the
delivery of the clean records it covers, so the announcement lands behind all of them in every
clean partition. A claim each worker made about its own partitions alone would go stale when
records arrive there while another worker runs ahead, and fire deadlines early. Records
produced after the claim are later in event time (the same assumption one worker makes). A
single worker covers every raw partition, so its clocks follow its watermark exactly as before.
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
    unknown) in ``latest`` (ms per raw partition, -1 unknown); a cover saying the pipeline is
    caught up marks every raw partition caught up, a record for some of them marks those not.
    Returns the watermark over all raw partitions once each is known: the lowest while any is
    not caught up, else the highest."""
    ms = int(at.timestamp() * 1000)
    mask, done = cover if cover is not None else (-1, False)
    for i, seen in enumerate(latest):
        if (mask >> i) & 1:
            latest[i] = max(seen, ms)
        if done or (mask >> i) & 1:
            caught_up[i] = done
    if not latest or min(latest) < 0:
        return None
    low = max(latest) if all(caught_up) else min(latest)
    return at if low == ms else datetime.fromtimestamp(low / 1000, UTC)
