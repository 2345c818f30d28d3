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

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from streams.records import TP

__all__ = [
    "COVER_HEADER",
    "HEADER",
    "SOURCE_HEADER",
    "BadHeader",
    "RecordHeaders",
    "Watermark",
    "combine",
    "cover_value",
    "header_value",
    "raw_index",
    "read_cover",
    "read_header",
    "read_headers",
    "read_source",
    "source_value",
]

HEADER = "pp-watermark"


class BadHeader(ValueError):
    """A pipeline header that does not parse. Internal topics are written by the pipeline only,
    but a record on them is still input: the caller dead-letters it (``bad_header``) instead of
    letting the agent, and so the worker, crash on it at every restart."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"header {name}: {problem}")
        self.header = name


class Watermark:
    def __init__(self) -> None:
        self.latest: dict[TP, datetime] = {}
        self.value: datetime | None = None
        self.caught_up = False  # at the last compute: no assigned partition had a backlog

    def observe(self, tp: TP, at: datetime) -> None:
        current = self.latest.get(tp)
        if current is None or at > current:
            self.latest[tp] = at

    def compute(
        self,
        assigned: Iterable[TP],
        caught_up: Callable[[TP], bool],
        not_after: datetime | None = None,
    ) -> datetime | None:
        """The watermark over ``assigned``; never past ``not_after`` (the wall clock, SPEC §7: an
        event stamped a little ahead is accepted but moves no clock past "now"), never back."""
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
        if candidate is not None and not_after is not None and candidate > not_after:
            candidate = not_after
        if candidate is not None and (self.value is None or candidate > self.value):
            self.value = candidate
        return self.value


def header_value(at: datetime) -> bytes:
    return str(int(at.timestamp() * 1000)).encode()


Headers = Mapping[str, Any] | Iterable[tuple[str, bytes]] | None

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_HEADER = 512  # characters: the pipeline's own headers are far shorter
_MILLIS = re.compile(r"-?[0-9]{1,15}")


def _is_number(text: str) -> bool:
    """``[0-9]{1,19}`` (str methods: a regular expression per record cost more)."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()


_HEX = re.compile(r"[0-9a-f]{1,256}")


def _text(wanted: str, value: Any) -> str:
    """A header's text; ``BadHeader`` when empty, too long or not ASCII (the pipeline writes
    only ASCII)."""
    if value is None or len(value) == 0:
        raise BadHeader(wanted, "empty")
    if len(value) > _MAX_HEADER:
        raise BadHeader(wanted, f"longer than {_MAX_HEADER} characters")
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise BadHeader(wanted, "not ASCII") from None
    if isinstance(value, str) and value.isascii():
        return value
    raise BadHeader(wanted, "not ASCII text")


def _items(headers: Headers) -> Iterable[tuple[str, Any]]:
    return headers.items() if isinstance(headers, Mapping) else headers  # type: ignore[union-attr,return-value]


def _header(headers: Headers, wanted: str) -> str | None:
    """The text of the first header ``wanted``, None when absent."""
    if not headers:
        return None
    for name, value in _items(headers):
        if name == wanted:
            return _text(wanted, value)
    return None


def read_header(headers: Headers) -> datetime | None:
    """The watermark a record carries (ms since the epoch), None when it carries none."""
    value = _header(headers, HEADER)
    return None if value is None else _watermark_of(value)


@lru_cache(maxsize=64)  # consecutive records mostly carry the same watermark
def _watermark_of(value: str) -> datetime:
    if not _MILLIS.fullmatch(value):
        raise BadHeader(HEADER, "not a number of milliseconds")
    try:
        return _EPOCH + timedelta(milliseconds=int(value))
    except OverflowError:
        raise BadHeader(HEADER, "out of the range of instants") from None


SOURCE_HEADER = "pp-src"


def source_value(topic: str, partition: int, offset: int) -> bytes:
    """The raw position a clean record was made from: ``topic|partition|offset``."""
    return f"{topic}|{partition}|{offset}".encode()


def read_source(headers: Headers, known: Collection[str] | None = None) -> tuple[str, int] | None:
    """``("topic|partition", offset)`` of the raw record behind a clean one, if stamped;
    ``known``: the raw ``topic|partition`` names it may name (None: any)."""
    text = _header(headers, SOURCE_HEADER)
    return None if text is None else _source_of(text, known)


def _source_of(text: str, known: Collection[str] | None) -> tuple[str, int]:
    where, _, offset = text.rpartition("|")
    topic, _, partition = where.rpartition("|")
    if not topic or not _is_number(partition) or not _is_number(offset):
        raise BadHeader(SOURCE_HEADER, "not topic|partition|offset")
    if known is not None and where not in known:
        raise BadHeader(SOURCE_HEADER, "not a raw partition of this pipeline")
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
    return None if text is None else _cover_of(text)


@lru_cache(maxsize=64)  # consecutive records mostly carry the same cover
def _cover_of(text: str) -> tuple[int, bool]:
    mask, _, done = text.partition(";")
    if not _HEX.fullmatch(mask) or done not in ("0", "1"):
        raise BadHeader(COVER_HEADER, "not <hex mask>;<0 or 1>")
    return int(mask, 16), done == "1"


class RecordHeaders(NamedTuple):
    """What the pipeline's headers on a clean record say (each None when absent)."""

    watermark: datetime | None
    cover: tuple[int, bool] | None
    source: tuple[str, int] | None


def read_headers(headers: Headers, known_sources: Collection[str] | None = None) -> RecordHeaders:
    """Every pipeline header of a clean record at once, so one guard covers them all: raises
    ``BadHeader`` if any does not parse. A cover without a watermark is refused too (the
    pipeline writes them together)."""
    texts: dict[str, str] = {}
    if headers:
        # librdkafka gives a list; anything else a Mapping (an ABC check costs more)
        items = headers if type(headers) is list else _items(headers)
        for name, value in items:  # one pass; the first of a name counts, as in ``_header``
            if name in _OURS and name not in texts:
                texts[name] = _text(name, value)
    watermark_text, cover_text = texts.get(HEADER), texts.get(COVER_HEADER)
    watermark = None if watermark_text is None else _watermark_of(watermark_text)
    cover = None if cover_text is None else _cover_of(cover_text)
    if cover is not None and watermark is None:
        raise BadHeader(COVER_HEADER, f"without {HEADER}")
    source_text = texts.get(SOURCE_HEADER)
    source = None if source_text is None else _source_of(source_text, known_sources)
    return RecordHeaders(watermark, cover, source)


_OURS = frozenset({HEADER, COVER_HEADER, SOURCE_HEADER})


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
