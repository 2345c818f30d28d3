"""The event catalogue read from the .avsc files matches SPEC §2 field by field."""

from __future__ import annotations

import pytest

from schemas.catalogue import AVRO_DIR, EventType, FieldSpec, event_types, load_named_schema

S = "string"


def enum(*symbols: str) -> tuple[str, tuple[str, ...]]:
    return ("enum", symbols)


# SPEC §2, transcribed: event_type → {field: (kind, symbols) or kind}, plus the optional ones.
SPEC_FIELDS: dict[str, dict[str, object]] = {
    "patient.seen": {"encounter_id": S},
    "portal.invited": {"method": enum("email", "sms", "qr", "paper")},
    "portal.enrolled": {"method": enum("in_office", "self", "qr")},
    "portal.login": {"channel": enum("web", "mobile_app")},
    "app.installed": {"platform": enum("ios", "android")},
    "message.sent": {
        "thread_id": S,
        "message_id": S,
        "category": enum("clinical", "administrative", "billing", "other"),
    },
    "message.replied": {
        "thread_id": S,
        "message_id": S,
        "staff_pool": enum("provider", "nurse", "front_desk", "billing"),
        "automated": "boolean",
    },
    "result.posted": {"result_id": S},
    "result.viewed": {"result_id": S},
    "result.staff_contacted": {"result_id": S},
    "appointment.booked": {
        "appointment_id": S,
        "channel": enum("portal", "phone", "front_desk"),
        "appointment_type": enum("annual_exam", "follow_up", "same_day", "new_patient", "other"),
    },
    "payment.made": {
        "payment_id": S,
        "amount_cents": "long",
        "currency": S,
        "channel": enum("portal", "phone", "mail", "in_person"),
    },
    "phone.call": {
        "call_id": S,
        "direction": enum("inbound", "outbound"),
        "reason": enum("scheduling", "results", "refill", "billing", "clinical", "other"),
    },
    "refill.requested": {"refill_id": S, "channel": enum("portal", "phone")},
    "record.viewed": {},
    "survey.response": {"survey_id": S, "score": "int"},
}
OPTIONAL = {("portal.enrolled", "method"): None, ("message.replied", "automated"): False}


def test_all_sixteen_event_types_and_nothing_else() -> None:
    types = event_types()
    assert len(SPEC_FIELDS) == 16
    assert set(types) == set(SPEC_FIELDS)


@pytest.mark.parametrize("name", sorted(SPEC_FIELDS))
def test_fields_kinds_and_enums_match_spec(name: str) -> None:
    spec = event_types()[name]
    assert isinstance(spec, EventType)
    assert spec.name == name
    assert spec.record.startswith("portalpulse.")
    assert [f.name for f in spec.fields] == list(SPEC_FIELDS[name])
    for field in spec.fields:
        expected = SPEC_FIELDS[name][field.name]
        if isinstance(expected, tuple):
            assert field.kind == "enum"
            assert field.symbols == expected[1]
        else:
            assert field.kind == expected
            assert field.symbols == ()


@pytest.mark.parametrize("name", sorted(SPEC_FIELDS))
def test_optional_flags_and_defaults(name: str) -> None:
    for field in event_types()[name].fields:
        key = (name, field.name)
        assert field.optional is (key in OPTIONAL), key
        if key in OPTIONAL:
            assert field.default == OPTIONAL[key]


def test_record_names_are_unique_and_in_the_details_union() -> None:
    records = [t.record for t in event_types().values()]
    assert len(set(records)) == len(records)
    for envelope in ("RawEvent", "CleanEvent"):
        schema = load_named_schema(envelope)
        details = next(f for f in schema["fields"] if f["name"] == "details")
        branch_names = {b["name"] if isinstance(b, dict) else b for b in details["type"]}
        assert branch_names == set(records), envelope


@pytest.mark.parametrize(
    ("envelope", "person_field"), [("RawEvent", "patient_id"), ("CleanEvent", "patient_pseudonym")]
)
def test_envelope_fields(envelope: str, person_field: str) -> None:
    fields = {f["name"]: f["type"] for f in load_named_schema(envelope)["fields"]}
    assert list(fields) == [
        "event_id", "event_type", "occurred_at", "practice_id", person_field, "details",
    ]  # fmt: skip
    assert fields["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    for name in ("event_id", "event_type", "practice_id", person_field):
        assert fields[name] == "string"


def test_every_avsc_file_parses() -> None:
    files = sorted(AVRO_DIR.glob("portalpulse.*.avsc"))
    assert len(files) == 16 + 4  # event types + RawEvent, CleanEvent, Alert, DeadLetter
    for path in files:
        name = path.name.removeprefix("portalpulse.").removesuffix(".avsc")
        assert load_named_schema(name)["name"] == f"portalpulse.{name}"


def test_field_spec_is_frozen() -> None:
    spec = FieldSpec("x", "string")
    with pytest.raises(AttributeError):
        spec.name = "y"  # type: ignore[misc]
