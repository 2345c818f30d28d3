"""Raw topics: records reach the agents as Kafka's bytes, headers as Kafka's pairs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from streams.topics import BytesEvent, RawBytesSchema
from streams.watermark import read_header, read_source


def test_events_carry_the_records_bytes_and_headers_untouched() -> None:
    decode = RawBytesSchema().compile(SimpleNamespace())  # type: ignore[arg-type]
    message = SimpleNamespace(
        key=b"k", value=b"\xc3\x01v", headers=[("pp-watermark", b"1000"), ("pp-src", b"t|0|5")]
    )
    event = asyncio.run(decode(message))
    assert isinstance(event, BytesEvent)
    assert (event.key, event.value, event.message, event.acked) == (
        b"k",
        b"\xc3\x01v",
        message,
        False,
    )
    assert read_header(event.headers) == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert read_source(event.headers) == ("t|0", 5)


def test_no_headers_and_no_value() -> None:
    decode = RawBytesSchema().compile(SimpleNamespace())  # type: ignore[arg-type]
    event = asyncio.run(decode(SimpleNamespace(key=None, value=None, headers=None)))
    assert (event.key, event.value, tuple(event.headers)) == (None, None, ())
    assert read_header(event.headers) is None
