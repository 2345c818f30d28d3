"""The pipeline's headers on clean records: each reader refuses what the pipeline never writes."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from streams.watermark import (
    COVER_HEADER,
    HEADER,
    SOURCE_HEADER,
    BadHeader,
    Watermark,
    cover_value,
    header_value,
    raw_index,
    read_cover,
    read_header,
    read_headers,
    read_source,
    source_value,
)

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
KNOWN = frozenset({"p.raw.portal|0", "p.raw.portal|1"})


def test_what_the_pipeline_writes_reads_back() -> None:
    at = T0 + timedelta(milliseconds=123)
    headers = [
        (HEADER, header_value(at)),
        (COVER_HEADER, cover_value([TP("a", 0)], {TP("a", 0): 0}, caught_up=True)),
        (SOURCE_HEADER, source_value("p.raw.portal", 1, 42)),
    ]
    assert read_headers(headers, KNOWN) == (at, (1, True), ("p.raw.portal|1", 42))
    assert read_headers(dict(headers), KNOWN) == (at, (1, True), ("p.raw.portal|1", 42))
    assert read_headers([], KNOWN) == (None, None, None)
    assert read_headers(None) == (None, None, None)


@pytest.mark.parametrize(
    "value",
    [b"", b"notanumber", b"12.5", b"+5", b" 5", b"5_000", b"\xd9\xa3", b"1" * 16, b"9" * 15,
     b"-" + b"9" * 15, b"0x10"],
)  # fmt: skip
def test_watermark_header_refused(value: bytes) -> None:
    with pytest.raises(BadHeader) as caught:
        read_header([(HEADER, value)])
    assert caught.value.header == HEADER


@pytest.mark.parametrize(
    "value",
    [b"", b"x|0|notanumber", b"raw|0|", b"raw|x|1", b"|0|1", b"raw|0|-1", b"raw|-1|1", b"raw0",
     b"raw|0|1\n", b"raw|\xff|1", b"r" * 600 + b"|0|1"],
)  # fmt: skip
def test_source_header_refused(value: bytes) -> None:
    with pytest.raises(BadHeader) as caught:
        read_source([(SOURCE_HEADER, value)])
    assert caught.value.header == SOURCE_HEADER


def test_source_naming_no_raw_partition_of_the_pipeline_is_refused() -> None:
    with pytest.raises(BadHeader):
        read_source([(SOURCE_HEADER, b"p.raw.portal|7|1")], KNOWN)
    assert read_source([(SOURCE_HEADER, b"elsewhere|7|1")]) == ("elsewhere|7", 1)


@pytest.mark.parametrize("value", [b"", b"zz;1", b"f;2", b"f", b"f;", b";1", b"F;1", b"-1;0"])
def test_cover_header_refused(value: bytes) -> None:
    with pytest.raises(BadHeader) as caught:
        read_cover([(COVER_HEADER, value)])
    assert caught.value.header == COVER_HEADER


def test_a_cover_without_a_watermark_is_refused() -> None:
    with pytest.raises(BadHeader):
        read_headers([(COVER_HEADER, b"f;1")])


def test_bad_header_is_a_value_error_that_names_no_content() -> None:
    with pytest.raises(ValueError, match="pp-src") as caught:
        read_source([(SOURCE_HEADER, b"MRN-123|0|notanumber")])
    assert "MRN" not in str(caught.value)


@given(st.lists(st.tuples(st.sampled_from([HEADER, COVER_HEADER, SOURCE_HEADER]), st.binary())))
def test_any_header_bytes_parse_or_raise_bad_header(headers: list[tuple[str, bytes]]) -> None:
    """Nothing but ``BadHeader`` escapes, which the processors' guard dead-letters."""
    with contextlib.suppress(BadHeader):
        read_headers(headers, KNOWN)


def test_the_ingest_watermark_never_passes_the_wall_clock() -> None:
    index = raw_index(["raw"], 2)
    a, b = list(index)
    mark = Watermark()
    now = T0
    mark.observe(a, T0 - timedelta(minutes=1))
    mark.observe(b, T0 + timedelta(minutes=4))  # stamped ahead, within the skew
    assert mark.compute([a, b], lambda tp: True, now) == now
    assert mark.compute([a, b], lambda tp: True, now + timedelta(minutes=2)) == now + timedelta(
        minutes=2
    )
    # Never back, even if the wall clock steps back.
    assert mark.compute([a, b], lambda tp: True, now) == now + timedelta(minutes=2)
    later = now + timedelta(minutes=10)
    assert mark.compute([a, b], lambda tp: True, later) == T0 + timedelta(minutes=4)
    assert mark.compute([a, b], lambda tp: True) == T0 + timedelta(minutes=4)  # no cap (tests)


@given(
    st.text(alphabet="0123456789٣x|", max_size=22), st.text(alphabet="0123456789²|", max_size=22)
)
def test_a_source_position_is_digits_as_the_pattern_said(partition: str, offset: str) -> None:
    """Partition and offset are ``[0-9]{1,19}``: no other digits (Arabic-Indic, superscripts),
    no sign, not empty, not longer."""
    import re

    number = re.compile(r"[0-9]{1,19}")
    text = f"p.raw.portal|{partition}|{offset}"
    where, _, last = text.rpartition("|")
    topic, _, part = where.rpartition("|")
    valid = text.isascii() and bool(topic) and bool(number.fullmatch(part))
    valid = valid and bool(number.fullmatch(last))
    headers = [(SOURCE_HEADER, text.encode())]
    if valid:
        assert read_source(headers) == (where, int(last))
    else:
        with pytest.raises(BadHeader):
            read_source(headers)
