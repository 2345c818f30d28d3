"""Poison input: any byte string ends as exactly one outcome, never an exception (crash safety).

A message that raised in ingest would stop the worker on the same offset forever, and a dead
letter larger than Kafka's 1 MB limit could not be sent at all. Refusals name the field and the
reason, never the value: a patient id in the wrong field must not reach a log or ClickHouse.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal_pulse.ingest import (
    MAX_CARRIED_ID_LENGTH,
    MAX_JSON_DEPTH,
    RAW_PREFIX_BYTES,
    Ingestor,
    Rejected,
)
from portal_pulse.pseudonym import Pseudonymizer
from schemas.model import CleanEvent
from schemas.serializer import AvroCodec, clean_event_to_record, get_codec, raw_event_to_record
from schemas.validation import MAX_DETAIL_LENGTH, validate_event

KEY = b"unit-test-key-not-a-secret-32-bytes"
NOW = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)
KAFKA_MAX_MESSAGE = 1_000_000
SECRET = "MRN-SECRET-123"
MEGABYTE = 1_000_000


def flat(**overrides: Any) -> dict[str, Any]:
    obj = {
        "event_id": "ev-1",
        "event_type": "message.sent",
        "occurred_at": "2026-01-05T09:30:00-05:00",
        "practice_id": "practice-a",
        "patient_id": "MRN-98765-XYZ",
        "thread_id": "th-1",
        "message_id": "msg-1",
        "category": "administrative",
    }
    obj.update(overrides)
    return obj


def as_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def avro_unchecked(**overrides: Any) -> bytes:
    """Avro bytes of an event that skipped validation, as a careless producer would send."""
    record = raw_event_to_record(validate_event(flat()))
    record.update(overrides)
    return get_codec("RawEvent").encode_record(record)


def make_ingestor() -> Ingestor:
    return Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), dedup_capacity=100)


@pytest.fixture
def ingestor() -> Ingestor:
    return make_ingestor()


def big_random_text(n: int = MEGABYTE, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789 -_[]{}\"\\'", k=n))


def refused(ingestor: Ingestor, data: bytes, reason: str) -> Rejected:
    """Ingest ``data``: one Rejected with ``reason`` whose dead letter is sound and fits Kafka."""
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected), out
    assert out.reason == reason, (out.reason, out.detail)
    assert len(out.detail) <= MAX_DETAIL_LENGTH
    record = out.dead_letter(data, "portal.raw.portal", 1, 7, NOW)
    assert record["raw"] == data[:RAW_PREFIX_BYTES]
    assert record["raw_length"] == len(data)
    assert record["raw_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["raw_truncated"] is (len(data) > RAW_PREFIX_BYTES)
    codec = get_codec("DeadLetter")
    encoded = codec.encode_record(record)
    assert len(encoded) < KAFKA_MAX_MESSAGE
    assert codec.decode_record(encoded) == record
    for carried in (out.event_id, out.practice_id):
        assert carried is None or (len(carried) <= MAX_CARRIED_ID_LENGTH and carried.isprintable())
    return out


def nested(depth: int) -> Any:
    """A value ``depth`` lists deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- deep nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 200_000,
        b'{"a":' * 100_000,
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a":' * 500 + b"1" + b"}" * 500,
        as_json(flat(extra=nested(MAX_JSON_DEPTH))),
        b" \n" + b"[" * 10_000,
    ],
    ids=["open-lists", "open-objects", "balanced-lists", "balanced-objects", "in-extra", "ws"],
)
def test_deep_nesting_is_invalid_json(ingestor: Ingestor, data: bytes) -> None:
    out = refused(ingestor, data, "invalid_json")
    assert str(MAX_JSON_DEPTH) in out.detail


def test_brackets_inside_strings_do_not_count_as_nesting(ingestor: Ingestor) -> None:
    data = as_json(flat(note="[" * 10_000 + '{"' * 1000, other='\\"[[[[' * 50))
    assert isinstance(ingestor.ingest(data, NOW), CleanEvent)


def test_moderate_nesting_in_extras_is_accepted(ingestor: Ingestor) -> None:
    data = as_json(flat(extra=nested(MAX_JSON_DEPTH - 1), more=[nested(20)] * 10))
    assert isinstance(ingestor.ingest(data, NOW), CleanEvent)


def test_an_unterminated_string_full_of_escaped_quotes_is_quick(ingestor: Ingestor) -> None:
    data = b"[" * 100 + b'"' + b'\\"' * 300_000
    refused(ingestor, data, "invalid_json")


# -- size ----------------------------------------------------------------------------------------


def test_a_megabyte_of_random_bytes(ingestor: Ingestor) -> None:
    data = b"x" + random.Random(1).randbytes(MEGABYTE)
    out = refused(ingestor, data, "undecodable")
    assert out.event_id is None


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"category": "x" * MEGABYTE}, "bad_enum", "category"),
        ({"event_type": "portal.login", "channel": big_random_text()}, "bad_enum", "channel"),
        ({"event_id": "e" * MEGABYTE}, "identifier_too_long", "event_id"),
        ({"practice_id": big_random_text()}, "identifier_too_long", "practice_id"),
        ({"patient_id": big_random_text()}, "identifier_too_long", "patient_id"),
        ({"thread_id": "t" * MEGABYTE}, "identifier_too_long", "thread_id"),
        ({"occurred_at": big_random_text()}, "bad_timestamp", "occurred_at"),
        ({"event_type": big_random_text()}, "unknown_event_type", "event_type"),
    ],
    ids=[
        "enum",
        "random-enum",
        "event_id",
        "practice_id",
        "patient_id",
        "thread_id",
        "occurred_at",
        "event_type",
    ],
)
def test_megabyte_values_make_a_bounded_dead_letter(
    ingestor: Ingestor, overrides: dict[str, Any], reason: str, field: str
) -> None:
    data = as_json(flat(**overrides))
    assert len(data) > MEGABYTE
    out = refused(ingestor, data, reason)
    assert out.field == field
    assert overrides[field][:50] not in out.detail
    if field == "event_id":
        assert out.event_id is None  # not a plausible key
    if field == "practice_id":
        assert out.practice_id is None


def test_a_megabyte_avro_event_id(ingestor: Ingestor) -> None:
    out = refused(ingestor, avro_unchecked(event_id="e" * MEGABYTE), "identifier_too_long")
    assert (out.field, out.event_id) == ("event_id", None)


def test_a_big_extra_field_does_not_travel_with_the_clean_event(ingestor: Ingestor) -> None:
    out = ingestor.ingest(as_json(flat(note=big_random_text())), NOW)
    assert isinstance(out, CleanEvent)
    assert len(get_codec("CleanEvent").encode_record(clean_event_to_record(out))) < 1000


def test_carried_ids_are_kept_when_plausible(ingestor: Ingestor) -> None:
    eid = "e" * MAX_CARRIED_ID_LENGTH
    out = refused(ingestor, as_json(flat(event_id=eid, category="urgent")), "bad_enum")
    assert (out.event_id, out.practice_id) == (eid, "practice-a")
    out = refused(ingestor, as_json(flat(event_id=eid + "e", category="urgent")), "bad_enum")
    assert (out.event_id, out.practice_id) == (None, "practice-a")


# -- encodings -----------------------------------------------------------------------------------

TEXT = json.dumps(flat(note="café"), ensure_ascii=False)


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf" + TEXT.encode(),
        TEXT.encode("utf-16"),
        TEXT.encode("utf-16-le"),
        TEXT.encode("utf-16-be"),
        TEXT.encode("utf-32"),
        TEXT.encode("utf-32-le"),
        TEXT.encode("utf-32-be"),
        TEXT.encode("latin-1"),
        TEXT.encode("cp1252"),
        b"{" + "café".encode()[:-1] + b"}",
        TEXT.encode("utf-8", "surrogatepass").replace(b"caf\xc3\xa9", b"\xed\xa0\x80"),
    ],
    ids=[
        "utf8-bom",
        "utf16-bom",
        "utf16-le",
        "utf16-be",
        "utf32-bom",
        "utf32-le",
        "utf32-be",
        "latin1",
        "cp1252",
        "cut-sequence",
        "encoded-surrogate",
    ],
)
def test_only_plain_utf8_json_is_accepted(ingestor: Ingestor, data: bytes) -> None:
    refused(ingestor, data, "bad_encoding")


def test_plain_utf8_json_with_non_ascii_is_accepted(ingestor: Ingestor) -> None:
    assert isinstance(ingestor.ingest(TEXT.encode(), NOW), CleanEvent)


@pytest.fixture
def registry_ingestor() -> Ingestor:
    import authlib.deprecate  # noqa: F401  (see tests/unit/schemas/test_serializer.py)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        codec = AvroCodec("RawEvent", registry_url="mock://poison")
    return Ingestor(codec, Pseudonymizer(KEY))


@pytest.mark.parametrize("extra", [b"\x00", b"MRN-SECRET-123", b"\xff" * 70_000])
def test_avro_with_trailing_bytes_is_refused(ingestor: Ingestor, extra: bytes) -> None:
    data = avro_unchecked()
    assert isinstance(make_ingestor().ingest(data, NOW), CleanEvent)
    out = refused(ingestor, data + extra, "undecodable")
    assert "trailing" in out.detail
    assert SECRET not in out.detail


def test_confluent_avro_with_trailing_bytes_is_refused(registry_ingestor: Ingestor) -> None:
    record = raw_event_to_record(validate_event(flat()))
    data = registry_ingestor.codec.encode_record(record)
    fresh = Ingestor(registry_ingestor.codec, Pseudonymizer(KEY))
    assert isinstance(fresh.ingest(data, NOW), CleanEvent)
    out = refused(registry_ingestor, data + SECRET.encode(), "undecodable")
    assert "trailing" in out.detail


# -- control characters in identifiers -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["event_id", "practice_id", "patient_id", "thread_id", "message_id"]
)
@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\x1f", "\x7f", "\ud800"])
def test_control_characters_in_ids_are_refused(ingestor: Ingestor, name: str, char: str) -> None:
    data = json.dumps(flat(**{name: f"id{char}1"})).encode()  # ascii: escaped, so valid JSON
    out = refused(ingestor, data, "bad_identifier")
    assert out.field == name
    if name in ("event_id", "practice_id"):
        assert getattr(out, name) is None


@pytest.mark.parametrize("name", ["event_id", "patient_id", "practice_id"])
def test_control_characters_in_avro_ids_are_refused(ingestor: Ingestor, name: str) -> None:
    out = refused(ingestor, avro_unchecked(**{name: "ev\x00-1"}), "bad_identifier")
    assert out.field == name


def test_a_raw_nul_inside_json_is_invalid_json(ingestor: Ingestor) -> None:
    refused(ingestor, b'{"event_id": "ev\x001"}', "invalid_json")


def test_a_nul_in_a_result_id_is_refused(ingestor: Ingestor) -> None:
    data = as_json(flat(event_type="result.viewed", result_id="r\x00"))
    assert refused(ingestor, data, "bad_identifier").field == "result_id"


# -- PHI: details never carry the value -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_type": "portal.login", "channel": SECRET}, "bad_enum"),
        ({"category": SECRET}, "bad_enum"),
        ({"occurred_at": SECRET}, "bad_timestamp"),
        ({"occurred_at": f"2026-01-05T09:30:00 {SECRET}"}, "bad_timestamp"),
        ({"event_type": SECRET}, "unknown_event_type"),
        ({"event_id": SECRET + "\x00"}, "bad_identifier"),
        ({"patient_id": SECRET * 50}, "identifier_too_long"),
        ({"occurred_at": "2099-01-01T00:00:00Z", "patient_id": SECRET}, "timestamp_out_of_range"),
    ],
)
def test_json_rejections_never_echo_the_value(
    ingestor: Ingestor, overrides: dict[str, Any], reason: str
) -> None:
    out = refused(ingestor, as_json(flat(**overrides)), reason)
    assert_no_secret(out)


@pytest.mark.parametrize(
    "overrides",
    [{"event_type": SECRET}, {"event_id": SECRET + "\x00"}, {"patient_id": SECRET + "\n"}],
)
def test_avro_rejections_never_echo_the_value(
    ingestor: Ingestor, overrides: dict[str, Any]
) -> None:
    out = ingestor.ingest(avro_unchecked(**overrides), NOW)
    assert isinstance(out, Rejected)
    assert_no_secret(out)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc3\x01" + SECRET.encode(),
        b"\x00" + SECRET.encode(),
        b"{" + SECRET.encode(),
        b'{"event_id": "' + SECRET.encode() + b'"',
        SECRET.encode("utf-16"),
        b"{" + SECRET.encode() + b"\xff",
    ],
)
def test_undecodable_rejections_never_echo_the_input(ingestor: Ingestor, data: bytes) -> None:
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    assert_no_secret(out)


def assert_no_secret(out: Rejected) -> None:
    for text in (out.detail, out.field or "", out.event_id or "", out.practice_id or ""):
        assert SECRET not in text
        assert "SECRET" not in text


# -- any input at all ----------------------------------------------------------------------------

OUTCOMES = (CleanEvent, Rejected, type(None))


def check_outcome(ingestor: Ingestor, data: bytes) -> None:
    """Exactly one outcome, and whatever it is can be written to Kafka."""
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, OUTCOMES)
    if isinstance(out, Rejected):
        record = out.dead_letter(data, "t", 0, 0, NOW)
        assert len(get_codec("DeadLetter").encode_record(record)) < KAFKA_MAX_MESSAGE
        (out.event_id or "").encode()  # the dead letter's key
    elif isinstance(out, CleanEvent):
        get_codec("CleanEvent").encode_record(clean_event_to_record(out))
        out.event_id.encode()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    check_outcome(make_ingestor(), data)


PREFIXES = [b"", b"\xc3\x01", b"\x00", b"{", b"[", b"\xef\xbb\xbf", b"\xff\xfe", b" "]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PREFIXES), st.binary(max_size=512))
def test_arbitrary_bytes_after_a_magic_never_raise(prefix: bytes, data: bytes) -> None:
    check_outcome(make_ingestor(), prefix + data)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=64))
def test_mangled_avro_never_raises(cut: int, noise: bytes) -> None:
    data = avro_unchecked()
    cut = min(cut, len(data))
    check_outcome(make_ingestor(), data[:cut] + noise + data[cut + len(noise) :])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
FIELDS = [*flat(), "channel", "amount_cents", "currency", "score", "automated", "_details_mismatch"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), json_values), st.booleans())
def test_arbitrary_json_events_never_raise(overrides: dict[str, Any], base: bool) -> None:
    obj = {**flat(), **overrides} if base else overrides
    text = json.dumps(obj, ensure_ascii=False)
    check_outcome(make_ingestor(), text.encode("utf-8", "surrogatepass"))
    check_outcome(make_ingestor(), json.dumps(obj).encode())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('{}[]":,0123456789.eE-+ \\tnulrfasx\x00\u00e9\ud800')))
def test_arbitrary_json_ish_text_never_raises(text: str) -> None:
    check_outcome(make_ingestor(), text.encode("utf-8", "surrogatepass"))
