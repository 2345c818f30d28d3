"""SPEC §2 validation: every reason code, the optional fields, time parsing and bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.catalogue import event_types
from schemas.model import RawEvent
from schemas.validation import (
    ENVELOPE,
    MAX_DETAIL_LENGTH,
    MAX_IDENTIFIER_LENGTH,
    MAX_PRACTICE_ID_LENGTH,
    InvalidEvent,
    TimeBounds,
    bounded,
    is_practice_id,
    parse_instant,
    to_flat_json,
    validate_event,
)

AT = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

EXAMPLES: dict[str, dict[str, Any]] = {
    "patient.seen": {"encounter_id": "enc-1"},
    "portal.invited": {"method": "email"},
    "portal.enrolled": {"method": "self"},
    "portal.login": {"channel": "web"},
    "app.installed": {"platform": "ios"},
    "message.sent": {"thread_id": "t", "message_id": "m", "category": "billing"},
    "message.replied": {"thread_id": "t", "message_id": "r", "staff_pool": "billing"},
    "result.posted": {"result_id": "r1"},
    "result.viewed": {"result_id": "r1"},
    "result.staff_contacted": {"result_id": "r1"},
    "appointment.booked": {
        "appointment_id": "a",
        "channel": "phone",
        "appointment_type": "same_day",
    },
    "payment.made": {"payment_id": "p", "amount_cents": 1, "currency": "EUR", "channel": "mail"},
    "phone.call": {"call_id": "c", "direction": "outbound", "reason": "refill"},
    "refill.requested": {"refill_id": "f", "channel": "phone"},
    "record.viewed": {},
    "survey.response": {"survey_id": "s", "score": 1},
}


def flat(kind: str = "payment.made", /, **overrides: Any) -> dict[str, Any]:
    """A valid event of ``kind``; an override of ``...`` removes the field."""
    obj = {
        "event_id": "ev-1",
        "event_type": kind,
        "occurred_at": "2026-01-05T09:30:00-05:00",
        "practice_id": "practice-a",
        "patient_id": "MRN-1",
        **EXAMPLES[kind],
    }
    for key, value in overrides.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def reason_of(obj: Any, **kwargs: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidEvent) as info:
        validate_event(obj, **kwargs)
    return info.value.reason, info.value.field


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_every_example_is_valid(event_type: str) -> None:
    event = validate_event(flat(event_type))
    assert isinstance(event, RawEvent)
    assert event.event_type == event_type
    assert event.occurred_at == AT
    assert event.occurred_at.tzinfo == UTC
    assert event.patient_id == "MRN-1"
    assert set(event.details) == {f.name for f in event_types()[event_type].fields}


def test_examples_cover_the_catalogue() -> None:
    assert set(EXAMPLES) == set(event_types())


def test_unknown_extra_fields_are_ignored() -> None:
    event = validate_event(flat("portal.login", body="hello", extra=1))
    assert event.details == {"channel": "web"}


# -- reason codes --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENVELOPE)
def test_missing_envelope_field(name: str) -> None:
    assert reason_of(flat(**{name: ...})) == ("missing_field", name)
    assert reason_of(flat(**{name: None})) == ("missing_field", name)


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        (t, f.name)
        for t, spec in sorted(event_types().items())
        for f in spec.fields
        if not f.optional
    ],
)
def test_missing_type_field(event_type: str, name: str) -> None:
    assert reason_of(flat(event_type, **{name: ...})) == ("missing_field", name)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_id": 17}, "event_id"),
        ({"practice_id": ["a"]}, "practice_id"),
        ({"patient_id": 123}, "patient_id"),
        ({"event_type": 3}, "event_type"),
        ({"occurred_at": 1767623400}, "occurred_at"),
        ({"amount_cents": "100"}, "amount_cents"),
        ({"amount_cents": 100.0}, "amount_cents"),
        ({"amount_cents": True}, "amount_cents"),
        ({"payment_id": 5}, "payment_id"),
        ({"currency": 840}, "currency"),
    ],
)
def test_wrong_type(overrides: dict[str, Any], field: str) -> None:
    assert reason_of(flat(**overrides)) == ("wrong_type", field)


def test_wrong_type_for_int_and_boolean_fields() -> None:
    assert reason_of(flat("survey.response", score="5")) == ("wrong_type", "score")
    assert reason_of(flat("message.replied", automated="yes")) == ("wrong_type", "automated")
    assert reason_of(flat("message.replied", automated=1)) == ("wrong_type", "automated")


def test_integers_must_fit_their_avro_type() -> None:
    assert reason_of(flat(amount_cents=2**63)) == ("wrong_type", "amount_cents")
    assert validate_event(flat(amount_cents=2**63 - 1)).details["amount_cents"] == 2**63 - 1
    assert reason_of(flat("survey.response", score=2**31)) == ("wrong_type", "score")
    assert reason_of(flat("survey.response", score=-(2**31) - 1)) == ("wrong_type", "score")


@pytest.mark.parametrize("name", ["event_id", "event_type", "practice_id", "patient_id"])
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_envelope_field(name: str, blank: str) -> None:
    assert reason_of(flat(**{name: blank})) == ("empty_field", name)


def test_empty_type_field() -> None:
    assert reason_of(flat("message.sent", thread_id=" ")) == ("empty_field", "thread_id")
    assert reason_of(flat(payment_id="")) == ("empty_field", "payment_id")


@pytest.mark.parametrize(
    ("event_type", "name", "value"),
    [
        ("portal.invited", "method", "fax"),
        ("portal.enrolled", "method", "email"),
        ("portal.login", "channel", "WEB"),
        ("app.installed", "platform", "windows"),
        ("message.sent", "category", "urgent"),
        ("message.replied", "staff_pool", "doctor"),
        ("appointment.booked", "channel", "online"),
        ("appointment.booked", "appointment_type", "checkup"),
        ("payment.made", "channel", "card"),
        ("phone.call", "direction", "sideways"),
        ("phone.call", "reason", "chat"),
        ("refill.requested", "channel", "mail"),
        ("portal.login", "channel", 1),
    ],
)
def test_bad_enum(event_type: str, name: str, value: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(event_type, **{name: value}))
    assert (info.value.reason, info.value.field) == ("bad_enum", name)
    assert name in str(info.value)


@pytest.mark.parametrize("value", ["message.deleted", "MESSAGE.SENT", "login"])
def test_unknown_event_type(value: str) -> None:
    obj = flat("portal.login")
    obj["event_type"] = value
    assert reason_of(obj) == ("unknown_event_type", "event_type")


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-01-05",
        "2026-01-05T09:30:00",
        "2026-13-05T09:30:00Z",
        "",
        "05/01/2026 09:30",
    ],
)
def test_bad_timestamp(value: str) -> None:
    assert reason_of(flat(occurred_at=value)) == ("bad_timestamp", "occurred_at")


def test_naive_datetime_object_is_a_bad_timestamp() -> None:
    assert reason_of(flat(occurred_at=AT.replace(tzinfo=None))) == ("bad_timestamp", "occurred_at")


@pytest.mark.parametrize("amount", [0, -1, -250_00])
def test_non_positive_amount(amount: int) -> None:
    assert reason_of(flat(amount_cents=amount)) == ("non_positive_amount", "amount_cents")


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "U$D", "USD\n", " USD", "12A"])
def test_bad_currency(currency: str) -> None:
    assert reason_of(flat(currency=currency)) == ("bad_currency", "currency")


@pytest.mark.parametrize("score", [0, 6, -1, 100])
def test_score_out_of_range(score: int) -> None:
    assert reason_of(flat("survey.response", score=score)) == ("score_out_of_range", "score")


@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_scores_in_range(score: int) -> None:
    assert validate_event(flat("survey.response", score=score)).details["score"] == score


@pytest.mark.parametrize("obj", [[], "event", 42, None, ["event_id"]])
def test_not_an_object(obj: Any) -> None:
    assert reason_of(obj) == ("not_an_object", None)


def test_timestamp_out_of_range() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    past = (now - timedelta(days=3651)).isoformat()
    # SPEC §7: a small skew ahead of the wall clock, 5 minutes by default.
    for ahead in (timedelta(minutes=5, milliseconds=1), timedelta(hours=23, minutes=50)):
        future = (now + ahead).isoformat()
        assert reason_of(flat(occurred_at=future), now=now) == (
            "timestamp_out_of_range", "occurred_at",
        )  # fmt: skip
    assert reason_of(flat(occurred_at=past), now=now) == ("timestamp_out_of_range", "occurred_at")
    # Within the bounds, and with no ``now`` no check at all.
    assert validate_event(flat(occurred_at=(now + timedelta(minutes=5)).isoformat()), now=now)
    assert validate_event(flat(occurred_at="1990-01-01T00:00:00Z"))


def test_custom_time_bounds() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    bounds = TimeBounds(max_future=timedelta(minutes=5), max_past=timedelta(days=1))
    soon = (now + timedelta(minutes=6)).isoformat()
    assert reason_of(flat(occurred_at=soon), now=now, bounds=bounds)[0] == "timestamp_out_of_range"
    old = (now - timedelta(days=2)).isoformat()
    assert reason_of(flat(occurred_at=old), now=now, bounds=bounds)[0] == "timestamp_out_of_range"
    ok = (now - timedelta(hours=23)).isoformat()
    assert validate_event(flat(occurred_at=ok), now=now, bounds=bounds)


def test_first_bad_field_is_named() -> None:
    # The envelope is checked before the type fields.
    obj = flat(patient_id="", amount_cents=-5)
    assert reason_of(obj) == ("empty_field", "patient_id")


# -- optional fields -----------------------------------------------------------------------------


def test_enrolled_method_is_optional() -> None:
    assert validate_event(flat("portal.enrolled", method=...)).details == {"method": None}
    assert validate_event(flat("portal.enrolled", method=None)).details == {"method": None}
    assert validate_event(flat("portal.enrolled", method="qr")).details == {"method": "qr"}


def test_replied_automated_defaults_to_false() -> None:
    assert validate_event(flat("message.replied")).details["automated"] is False
    assert validate_event(flat("message.replied", automated=None)).details["automated"] is False
    assert validate_event(flat("message.replied", automated=True)).details["automated"] is True


def test_record_viewed_has_no_fields() -> None:
    assert validate_event(flat("record.viewed")).details == {}


# -- parse_instant and to_flat_json --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-05T14:30:00Z",
        "2026-01-05T14:30:00z",
        "2026-01-05T14:30:00+00:00",
        "2026-01-05T09:30:00-05:00",
        "2026-01-05T23:30:00+09:00",
        "2026-01-05T14:30:00.000Z",
        " 2026-01-05T14:30:00Z ",
    ],
)
def test_parse_instant_normalises_to_utc(text: str) -> None:
    parsed = parse_instant(text)
    assert parsed == AT
    assert parsed.utcoffset() == timedelta(0)


def test_parse_instant_accepts_aware_datetimes() -> None:
    tokyo = datetime(2026, 1, 5, 23, 30, tzinfo=timezone(timedelta(hours=9)))
    assert parse_instant(tokyo) == AT
    assert parse_instant(tokyo).tzinfo == UTC


def test_parse_instant_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_instant("nope", "due_at")
    assert (info.value.reason, info.value.field) == ("bad_timestamp", "due_at")


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_to_flat_json_round_trips(event_type: str) -> None:
    event = validate_event(flat(event_type))
    out = to_flat_json(event)
    assert out["occurred_at"] == "2026-01-05T14:30:00Z"
    assert validate_event(out) == event


def test_to_flat_json_leaves_absent_optionals_out() -> None:
    out = to_flat_json(validate_event(flat("portal.enrolled", method=...)))
    assert "method" not in out


# -- identifiers ---------------------------------------------------------------------------------

ID_FIELDS = sorted(
    {("payment.made", n) for n in ("event_id", "practice_id", "patient_id")}
    | {
        (t, f.name)
        for t, spec in event_types().items()
        for f in spec.fields
        if f.kind == "string" and f.name.endswith("_id")
    }
)


def test_identifier_fields_cover_every_type_specific_id() -> None:
    names = {name for _, name in ID_FIELDS}
    assert {"thread_id", "message_id", "result_id", "payment_id", "survey_id"} <= names
    assert "currency" not in names


@pytest.mark.parametrize(("event_type", "name"), ID_FIELDS)
@pytest.mark.parametrize(
    "bad",
    [
        "ev\x001",
        "\x00",
        "ev\x1f",
        "ev\x7f",
        "a\nb",
        "a\rb",
        "tab\there",
        "\x85x",
        "\ud800",
        "a\u200bb",
    ],
    ids=["nul", "only-nul", "us", "del", "lf", "cr", "tab", "nel", "surrogate", "zero-width"],
)
def test_control_characters_in_identifiers_are_refused(
    event_type: str, name: str, bad: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(event_type, **{name: bad}))
    assert (info.value.reason, info.value.field) == ("bad_identifier", name)
    assert bad not in info.value.detail
    assert name in info.value.detail


@pytest.mark.parametrize(
    ("event_type", "name"), [(t, n) for t, n in ID_FIELDS if n != "practice_id"]
)
def test_identifier_length_is_bounded(event_type: str, name: str) -> None:
    ok = "x" * MAX_IDENTIFIER_LENGTH
    assert validate_event(flat(event_type, **{name: ok}))
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(event_type, **{name: ok + "x"}))
    assert (info.value.reason, info.value.field) == ("identifier_too_long", name)
    assert str(MAX_IDENTIFIER_LENGTH) in info.value.detail


@pytest.mark.parametrize("good", ["MRN 0001", "ÉV-é-1", "患者-1", "a/b:c#d"])
def test_printable_identifiers_are_accepted(good: str) -> None:
    event = validate_event(flat(event_id=good, patient_id=good, payment_id=good))
    assert (event.event_id, event.patient_id, event.details["payment_id"]) == (good, good, good)


@pytest.mark.parametrize(
    "good", ["P001", "practice-a", "north.clinic_2", "x" * MAX_PRACTICE_ID_LENGTH, "7", "A.B-c_d"]
)
def test_practice_ids_spec_allows(good: str) -> None:
    assert validate_event(flat(practice_id=good)).practice_id == good
    assert is_practice_id(good)


@pytest.mark.parametrize(
    "bad",
    [
        "P9' OR '1'='1",  # SQL in a dashboard variable
        "P001:MRN",  # the pseudonym's separator: ("P001:MRN", "1") would be ("P001", "MRN:1")
        "P001|x",  # the clean topic key's separator
        "P 001",
        "P001/../x",
        "P001;DROP",
        '"P001"',
        "x" * (MAX_PRACTICE_ID_LENGTH + 1),
        "Ρ001",  # Greek capital rho: looks like P001
        "P001+1",
        "ｐ001",  # fullwidth
        "{{practice}}",
        "${practice}",
    ],
)
def test_hostile_practice_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(practice_id=bad))
    assert (info.value.reason, info.value.field) == ("bad_practice_id", "practice_id")
    assert info.value.detail == "practice_id must be 1 to 64 letters, digits, '.', '_' or '-'"
    assert not is_practice_id(bad)


@pytest.mark.parametrize("value", [None, 7, b"P001", ["P001"], "", "P001\n"])
def test_is_practice_id_takes_only_strings_of_the_rule(value: object) -> None:
    assert not is_practice_id(value)


# -- details never carry values (PHI) ------------------------------------------------------------

SECRET = "MRN-SECRET-123"


@pytest.mark.parametrize(
    ("kind", "overrides", "reason"),
    [
        ("portal.login", {"channel": SECRET}, "bad_enum"),
        ("appointment.booked", {"appointment_type": SECRET}, "bad_enum"),
        ("payment.made", {"occurred_at": SECRET}, "bad_timestamp"),
        ("payment.made", {"occurred_at": f"2026-01-05T{SECRET}"}, "bad_timestamp"),
        ("payment.made", {"occurred_at": "2026-01-05T09:30:00"}, "bad_timestamp"),
        ("payment.made", {"event_type": SECRET}, "unknown_event_type"),
        ("payment.made", {"currency": SECRET}, "bad_currency"),
        ("payment.made", {"amount_cents": SECRET}, "wrong_type"),
        ("payment.made", {"event_id": SECRET + "\x00"}, "bad_identifier"),
        ("payment.made", {"patient_id": SECRET * 100}, "identifier_too_long"),
        ("survey.response", {"score": SECRET}, "wrong_type"),
        ("message.replied", {"automated": SECRET}, "wrong_type"),
    ],
)
def test_details_name_the_field_never_the_value(
    kind: str, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(kind, **overrides))
    assert info.value.reason == reason
    assert SECRET not in info.value.detail
    assert SECRET not in str(info.value)
    assert info.value.field is not None and info.value.field in info.value.detail


def test_enum_detail_says_what_is_expected() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat("portal.login", channel=SECRET))
    assert info.value.detail == "channel must be one of web, mobile_app"


@pytest.mark.parametrize(
    "at", ["1999-12-31T23:59:59Z", "2199-01-01T00:00:00Z"], ids=["past", "future"]
)
def test_out_of_range_detail_states_the_bound_not_the_time(at: str) -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    with pytest.raises(InvalidEvent) as info:
        validate_event(flat(occurred_at=at), now=now)
    assert info.value.reason == "timestamp_out_of_range"
    assert at[:4] not in info.value.detail
    assert info.value.detail in (
        "occurred_at is more than 5 minutes in the future",
        "occurred_at is more than 3650 days in the past",
    )


def test_every_detail_is_bounded() -> None:
    error = InvalidEvent("x", "y" * 10_000, "f")
    assert len(error.detail) == MAX_DETAIL_LENGTH
    assert len(str(error)) == MAX_DETAIL_LENGTH
    assert bounded("short") == "short"


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
    ids=["year-0", "year-10000"],
)
def test_instants_outside_utc_years_are_bad_timestamps(value: str) -> None:
    assert reason_of(flat(occurred_at=value)) == ("bad_timestamp", "occurred_at")


@pytest.mark.parametrize("value", [[], {}, ["web"], 1.5])
def test_non_string_enum_values_are_bad_enums(value: Any) -> None:
    assert reason_of(flat("portal.login", channel=value)) == ("bad_enum", "channel")
