"""Event-time watermark across the raw topics, carried to the processors in a message header.

Sources are separate topics consumed at different speeds; the processors must not let a fast
source's event time fire deadlines while a slower source still holds earlier events. The
watermark is the lowest latest-event-time over raw partitions that still have a backlog (or the
highest, once all are caught up), and it never goes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

__all__ = [
    "HEADER",
    "SOURCE_HEADER",
    "Watermark",
    "header_value",
    "read_header",
    "read_source",
    "source_value",
]

HEADER = "pp-watermark"


class Watermark:
    def __init__(self) -> None:
        self.latest: dict[TP, datetime] = {}
        self.value: datetime | None = None

    def observe(self, tp: TP, at: datetime) -> None:
        current = self.latest.get(tp)
        if current is None or at > current:
            self.latest[tp] = at

    def compute(self, assigned: Iterable[TP], caught_up: Callable[[TP], bool]) -> datetime | None:
        lows: list[datetime] = []
        for tp in assigned:
            if caught_up(tp):
                continue
            at = self.latest.get(tp)
            if at is None:
                return self.value  # a backlog we know nothing about yet: hold
            lows.append(at)
        candidate = min(lows) if lows else max(self.latest.values(), default=None)
        if candidate is not None and (self.value is None or candidate > self.value):
            self.value = candidate
        return self.value


def header_value(at: datetime) -> bytes:
    return str(int(at.timestamp() * 1000)).encode()


def read_header(headers: Mapping[str, Any] | Iterable[tuple[str, bytes]] | None) -> datetime | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == HEADER and value:
            return datetime.fromtimestamp(int(value) / 1000, UTC)
    return None


SOURCE_HEADER = "pp-src"


def source_value(topic: str, partition: int, offset: int) -> bytes:
    """The raw position a clean record was made from: ``topic|partition|offset``."""
    return f"{topic}|{partition}|{offset}".encode()


def read_source(
    headers: Mapping[str, Any] | Iterable[tuple[str, bytes]] | None,
) -> tuple[str, int] | None:
    """``("topic|partition", offset)`` of the raw record behind a clean one, if stamped."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == SOURCE_HEADER and value:
            text = value.decode() if isinstance(value, bytes) else str(value)
            where, _, offset = text.rpartition("|")
            return where, int(offset)
    return None
