"""Avro codecs: round trips for every record, single-object and Confluent framing, bad input."""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest

from portal_pulse.domain.records import Alert
from schemas.catalogue import event_types
from schemas.model import CleanEvent, RawEvent
from schemas.serializer import (
    AvroCodec,
    SerializationError,
    clean_event_from_record,
    clean_event_to_record,
    crc64_avro,
    get_codec,
    raw_event_to_record,
    record_to_flat,
)
from schemas.validation import validate_event

AT = datetime(2026, 1, 5, 14, 30, 15, 123000, tzinfo=UTC)  # millisecond precision survives Avro

# One valid SPEC §2 example per event type (flat JSON shape, minus the envelope).
EXAMPLES: dict[str, dict[str, Any]] = {
    "patient.seen": {"encounter_id": "enc-1"},
    "portal.invited": {"method": "sms"},
    "portal.enrolled": {"method": "in_office"},
    "portal.login": {"channel": "mobile_app"},
    "app.installed": {"platform": "android"},
    "message.sent": {"thread_id": "th-1", "message_id": "msg-1", "category": "clinical"},
    "message.replied": {
        "thread_id": "th-1",
        "message_id": "msg-2",
        "staff_pool": "nurse",
        "automated": True,
    },
    "result.posted": {"result_id": "res-1"},
    "result.viewed": {"result_id": "res-1"},
    "result.staff_contacted": {"result_id": "res-1"},
    "appointment.booked": {
        "appointment_id": "ap-1",
        "channel": "portal",
        "appointment_type": "annual_exam",
    },
    "payment.made": {
        "payment_id": "pay-1",
        "amount_cents": 2_345_000,
        "currency": "USD",
        "channel": "portal",
    },
    "phone.call": {"call_id": "call-1", "direction": "inbound", "reason": "results"},
    "refill.requested": {"refill_id": "rf-1", "channel": "portal"},
    "record.viewed": {},
    "survey.response": {"survey_id": "sv-1", "score": 5},
}
TYPES = sorted(EXAMPLES)


def raw_event(event_type: str, **overrides: Any) -> RawEvent:
    flat = {
        "event_id": f"ev-{event_type}",
        "event_type": event_type,
        "occurred_at": AT.isoformat(),
        "practice_id": "practice-a",
        "patient_id": "MRN-000123",
        **EXAMPLES[event_type],
        **overrides,
    }
    return validate_event(flat)


def clean_event(event_type: str) -> CleanEvent:
    raw = raw_event(event_type)
    return CleanEvent(
        raw.event_id, raw.event_type, raw.occurred_at, raw.practice_id, "ab" * 16, raw.details
    )


def fastavro_fingerprint(codec: AvroCodec) -> int:
    canonical = fastavro.schema.to_parsing_canonical_form(codec.schema)
    # fastavro returns the hex of the fingerprint's little-endian bytes.
    return int.from_bytes(
        bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")), "little"
    )


def test_examples_cover_every_event_type() -> None:
    assert set(EXAMPLES) == set(event_types())


# -- CRC-64-AVRO ---------------------------------------------------------------------------------


def test_crc64_of_int_schema_matches_fastavro_and_the_avro_spec_value() -> None:
    expected = fastavro.schema.fingerprint('"int"', "CRC-64-AVRO")
    assert struct.pack("<Q", crc64_avro(b'"int"')).hex() == expected
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F


def test_crc64_of_empty_input_is_the_empty_constant() -> None:
    assert crc64_avro(b"") == 0xC15D213AA4D7A795


@pytest.mark.parametrize("text", ['"string"', '"long"', '{"type":"fixed","name":"f","size":4}'])
def test_crc64_matches_fastavro_on_other_canonical_forms(text: str) -> None:
    expected = fastavro.schema.fingerprint(text, "CRC-64-AVRO")
    assert struct.pack("<Q", crc64_avro(text.encode())).hex() == expected


@pytest.mark.parametrize("name", ["RawEvent", "CleanEvent", "Alert", "DeadLetter", "PaymentMade"])
def test_codec_fingerprint_matches_fastavro(name: str) -> None:
    codec = AvroCodec(name)
    assert codec.fingerprint == fastavro_fingerprint(codec)


# -- single-object framing and round trips -------------------------------------------------------


def assert_single_object(data: bytes, codec: AvroCodec) -> None:
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == struct.pack("<Q", fastavro_fingerprint(codec))


@pytest.mark.parametrize("event_type", TYPES)
def test_raw_event_round_trip(event_type: str) -> None:
    codec = get_codec("RawEvent")
    event = raw_event(event_type)
    data = codec.encode_record(raw_event_to_record(event))
    assert_single_object(data, codec)
    record = codec.decode_record(data)
    assert record["details"][0] == event_types()[event_type].record
    assert validate_event(record_to_flat(record)) == event


@pytest.mark.parametrize("event_type", TYPES)
def test_clean_event_round_trip(event_type: str) -> None:
    codec = get_codec("CleanEvent")
    event = clean_event(event_type)
    data = codec.encode_record(clean_event_to_record(event))
    assert_single_object(data, codec)
    back = clean_event_from_record(codec.decode_record(data))
    assert back == event
    assert back.occurred_at.tzinfo is not None


def test_optional_fields_take_their_defaults_through_avro() -> None:
    codec = get_codec("RawEvent")
    enrolled = raw_event("portal.enrolled", method=None)
    replied = raw_event("message.replied", automated=None)
    for event, name, default in ((enrolled, "method", None), (replied, "automated", False)):
        record = codec.decode_record(codec.encode_record(raw_event_to_record(event)))
        assert record["details"][1][name] is default


def test_clean_event_from_record_accepts_a_plain_details_mapping_and_naive_time() -> None:
    record = {
        "event_id": "e", "event_type": "portal.login", "occurred_at": AT.replace(tzinfo=None),
        "practice_id": "p", "patient_pseudonym": "ab" * 16, "details": {"channel": "web"},
    }  # fmt: skip
    event = clean_event_from_record(record)
    assert event.occurred_at == AT
    assert event.details == {"channel": "web"}


def make_alert(**overrides: Any) -> Alert:
    base = Alert(
        alert_id="a" * 16,
        kind="sla.breached",
        practice_id="practice-a",
        subject_id="th-1",
        patient_pseudonym="cd" * 16,
        category="clinical",
        staff_pool="nurse",
        due_at=AT,
        raised_at=AT + timedelta(seconds=1),
        updated_at=AT + timedelta(seconds=1),
    )
    return dataclasses.replace(base, **overrides)


def test_alert_schema_has_the_spec_8_fields() -> None:
    names = {f["name"] for f in get_codec("Alert").schema["fields"]}
    assert names == {f.name for f in dataclasses.fields(Alert)}
    assert {
        "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category",
        "staff_pool", "due_at", "resolved_at", "response_business_minutes",
    } <= names  # fmt: skip


@pytest.mark.parametrize(
    "alert",
    [
        make_alert(),
        make_alert().resolve(AT + timedelta(hours=3), 180.5),
        make_alert(kind="enrollment.dormant", subject_id="cd" * 16, category=None, staff_pool=None),
        make_alert().withdraw(AT + timedelta(hours=5, milliseconds=7)),
        make_alert().resolve(AT + timedelta(hours=3), 180.5).withdraw(AT + timedelta(days=2)),
    ],
    ids=["raised", "resolved", "followup", "withdrawn", "resolved-then-withdrawn"],
)
def test_alert_round_trip(alert: Alert) -> None:
    codec = get_codec("Alert")
    data = codec.encode_record(alert.as_dict())
    assert_single_object(data, codec)
    assert Alert(**codec.decode_record(data)) == alert


def test_alerts_written_before_withdrawn_at_still_decode_as_standing() -> None:
    """An alert of the first Alert schema (another fingerprint, no withdrawn_at) decodes with
    withdrawn_at None: records on the topic before the upgrade stay readable."""
    codec = get_codec("Alert")
    plain = {k: v for k, v in codec.schema.items() if not k.startswith("__")}
    old_schema = fastavro.parse_schema(
        {**plain, "fields": [f for f in plain["fields"] if f["name"] != "withdrawn_at"]},
        named_schemas={},
    )
    alert = make_alert().resolve(AT + timedelta(hours=3), 180.5)
    old_record = {k: v for k, v in alert.as_dict().items() if k != "withdrawn_at"}
    fp = fastavro_fingerprint_of(old_schema)
    assert fp != codec.fingerprint
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + struct.pack("<Q", fp))
    fastavro.schemaless_writer(buf, old_schema, old_record)
    decoded = codec.decode_record(buf.getvalue())
    assert decoded == {**old_record, "withdrawn_at": None}
    assert Alert(**decoded) == alert


def dead_letter_record(**overrides: Any) -> dict[str, Any]:
    record = {
        "reason": "missing_field",
        "detail": "missing required field thread_id",
        "field": "thread_id",
        "source_topic": "portal.raw.portal",
        "source_partition": 3,
        "source_offset": 123456789012,
        "event_id": "ev-1",
        "practice_id": "practice-a",
        "received_at": AT,
        "raw": b'{"event_id":"ev-1"}\x00\xff',
        "raw_length": 21,
        "raw_sha256": "ab" * 32,
        "raw_truncated": False,
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize(
    "record",
    [
        dead_letter_record(),
        dead_letter_record(
            field=None, event_id=None, practice_id=None, raw=b"", raw_length=None, raw_sha256=None
        ),
    ],
    ids=["full", "nulls"],
)
def test_dead_letter_round_trip(record: dict[str, Any]) -> None:
    codec = get_codec("DeadLetter")
    data = codec.encode_record(record)
    assert_single_object(data, codec)
    assert codec.decode_record(data) == record


def test_dead_letters_written_before_the_raw_digest_fields_still_decode() -> None:
    """Records of the first DeadLetter schema (another fingerprint) take the new defaults."""
    codec = get_codec("DeadLetter")
    added = ("raw_length", "raw_sha256", "raw_truncated")
    plain = {k: v for k, v in codec.schema.items() if not k.startswith("__")}
    old_schema = fastavro.parse_schema(
        {**plain, "fields": [f for f in plain["fields"] if f["name"] not in added]},
        named_schemas={},
    )
    old_record = {k: v for k, v in dead_letter_record().items() if k not in added}
    fp = fastavro_fingerprint_of(old_schema)
    assert fp != codec.fingerprint
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + struct.pack("<Q", fp))
    fastavro.schemaless_writer(buf, old_schema, old_record)
    decoded = codec.decode_record(buf.getvalue())
    assert decoded == {**old_record, "raw_length": None, "raw_sha256": None, "raw_truncated": False}


def fastavro_fingerprint_of(schema: Any) -> int:
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return crc64_avro(canonical.encode())


def test_a_codec_refuses_another_schemas_single_object_bytes() -> None:
    data = get_codec("Alert").encode_record(make_alert().as_dict())
    with pytest.raises(SerializationError, match="fingerprint"):
        get_codec("DeadLetter").decode_record(data)


# -- Confluent wire format -----------------------------------------------------------------------


@pytest.fixture
def registry_codec() -> AvroCodec:
    # The registry client imports authlib, which installs an "always" filter for its own
    # deprecation warnings and then warns about httpx; load it first so this filter wins.
    import authlib.deprecate  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return AvroCodec("RawEvent", registry_url="mock://test")


def test_confluent_framing_round_trip(registry_codec: AvroCodec) -> None:
    event = raw_event("payment.made")
    data = registry_codec.encode_record(raw_event_to_record(event))
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    registered = registry_codec._registry.get_schema(schema_id)  # the id names our schema
    assert registered.schema_type == "AVRO"
    assert "__fastavro" not in registered.schema_str
    assert validate_event(record_to_flat(registry_codec.decode_record(data))) == event


def test_confluent_writer_schema_is_fetched_from_the_registry(registry_codec: AvroCodec) -> None:
    event = raw_event("message.replied")
    data = registry_codec.encode_record(raw_event_to_record(event))
    registry_codec._writers_by_id.clear()  # as a fresh consumer that has not seen the id
    assert validate_event(record_to_flat(registry_codec.decode_record(data))) == event


def test_confluent_unknown_schema_id_is_a_serialization_error(registry_codec: AvroCodec) -> None:
    data = registry_codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    bogus = b"\x00" + struct.pack(">I", 987_654) + data[5:]
    with pytest.raises(SerializationError):
        registry_codec.decode_record(bogus)


def test_codec_without_registry_refuses_confluent_bytes(registry_codec: AvroCodec) -> None:
    data = registry_codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    with pytest.raises(SerializationError, match="SCHEMA_REGISTRY_URL"):
        AvroCodec("RawEvent").decode_record(data)


def test_registry_codec_still_reads_single_object_bytes(registry_codec: AvroCodec) -> None:
    event = raw_event("survey.response")
    data = AvroCodec("RawEvent").encode_record(raw_event_to_record(event))
    assert validate_event(record_to_flat(registry_codec.decode_record(data))) == event


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\xff\xfe\xfd",
        b'{"event_id": 1}',
        b"\xc3",
        b"\xc3\x01",
        b"\xc3\x01\x00\x01",  # magic and a truncated fingerprint
        b"\x00",
        b"\x00\x00\x00",
    ],
)
def test_garbage_raises_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        AvroCodec("RawEvent").decode_record(data)


def test_wrong_fingerprint_raises() -> None:
    codec = AvroCodec("RawEvent")
    data = codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    tampered = data[:2] + bytes(8) + data[10:]
    with pytest.raises(SerializationError, match="fingerprint"):
        codec.decode_record(tampered)


@pytest.mark.parametrize("event_type", ["payment.made", "message.replied", "record.viewed"])
def test_every_truncation_of_a_body_raises(event_type: str) -> None:
    codec = AvroCodec("RawEvent")
    data = codec.encode_record(raw_event_to_record(raw_event(event_type)))
    for cut in range(len(data) - 1, 9, -1):
        with pytest.raises(SerializationError):
            codec.decode_record(data[:cut])


@pytest.mark.parametrize("extra", [b"\x00", b"trailing", b"\xff" * 1000])
def test_trailing_bytes_after_a_record_raise(extra: bytes) -> None:
    codec = AvroCodec("RawEvent")
    data = codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    with pytest.raises(SerializationError, match="trailing bytes"):
        codec.decode_record(data + extra)


def test_confluent_trailing_bytes_raise(registry_codec: AvroCodec) -> None:
    data = registry_codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    with pytest.raises(SerializationError, match="trailing bytes"):
        registry_codec.decode_record(data + b"MRN-1")


def test_decode_errors_do_not_quote_the_input() -> None:
    """What fails to decode may be PHI in the wrong format: messages never carry its bytes."""
    codec = AvroCodec("RawEvent")
    secret = b"MRN-SECRET-123"
    good = codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    for data in (b"\xc3\x01" + secret, good[:10] + secret, good[:12] + b"\xff" * 30 + secret):
        with pytest.raises(SerializationError) as info:
            codec.decode_record(data)
        message = str(info.value)
        assert "MRN" not in message
        assert secret[:8].hex() not in message
        assert hex(int.from_bytes(secret[:8], "little")) not in message


def test_garbled_body_raises() -> None:
    codec = AvroCodec("RawEvent")
    data = codec.encode_record(raw_event_to_record(raw_event("portal.login")))
    with pytest.raises(SerializationError):
        codec.decode_record(data[:10] + b"\xff" * 40)


# -- record_to_flat ------------------------------------------------------------------------------


def test_record_to_flat_merges_the_matching_branch() -> None:
    record = raw_event_to_record(raw_event("phone.call"))
    flat = record_to_flat(record)
    assert "details" not in flat
    assert "_details_mismatch" not in flat
    assert flat["direction"] == "inbound"
    assert flat["reason"] == "results"


def test_record_to_flat_flags_a_branch_of_another_type() -> None:
    codec = AvroCodec("RawEvent")
    record = raw_event_to_record(raw_event("message.sent"))
    record["details"] = ("portalpulse.PortalLogin", {"channel": "web"})
    flat = record_to_flat(codec.decode_record(codec.encode_record(record)))
    assert flat["_details_mismatch"] == "portalpulse.PortalLogin"
    assert "channel" not in flat
    assert "thread_id" not in flat
    assert flat["event_type"] == "message.sent"
