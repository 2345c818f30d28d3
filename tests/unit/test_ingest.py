"""Ingest: bytes → a pseudonymized CleanEvent, a Rejected (dead letter) or None (duplicate)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal_pulse.ingest import Deduplicator, Ingestor, Rejected, bounds_from, pseudonymize
from portal_pulse.pseudonym import Pseudonymizer
from schemas.model import CleanEvent
from schemas.serializer import (
    clean_event_from_record,
    clean_event_to_record,
    get_codec,
    raw_event_to_record,
)
from schemas.validation import TimeBounds, validate_event

NOW = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)
KEY = b"unit-test-key"
PATIENT = "MRN-98765-XYZ"
PSEUDONYM = Pseudonymizer(KEY)("practice-a", PATIENT)


def flat(event_id: str = "ev-1", **overrides: Any) -> dict[str, Any]:
    obj = {
        "event_id": event_id,
        "event_type": "message.sent",
        "occurred_at": "2026-01-05T09:30:00-05:00",
        "practice_id": "practice-a",
        "patient_id": PATIENT,
        "thread_id": "th-1",
        "message_id": f"msg-{event_id}",
        "category": "administrative",
    }
    obj.update(overrides)
    return obj


def as_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def as_avro(obj: dict[str, Any]) -> bytes:
    return get_codec("RawEvent").encode_record(raw_event_to_record(validate_event(obj)))


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), dedup_capacity=100)


@pytest.mark.parametrize("encode", [as_json, as_avro], ids=["json", "avro"])
def test_accepts_and_pseudonymizes(ingestor: Ingestor, encode: Any) -> None:
    out = ingestor.ingest(encode(flat()), NOW)
    assert isinstance(out, CleanEvent)
    assert out.patient_pseudonym == PSEUDONYM
    assert out.event_id == "ev-1"
    assert out.event_type == "message.sent"
    assert out.occurred_at == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert out.details == {
        "thread_id": "th-1",
        "message_id": "msg-ev-1",
        "category": "administrative",
    }
    assert not hasattr(out, "patient_id")


@pytest.mark.parametrize(
    "data", [b" " + as_json(flat()), b"\n" + as_json(flat())], ids=["space", "newline"]
)
def test_json_with_leading_whitespace(ingestor: Ingestor, data: bytes) -> None:
    assert isinstance(ingestor.ingest(data, NOW), CleanEvent)


@pytest.mark.parametrize("encode", [as_json, as_avro], ids=["json", "avro"])
def test_raw_patient_id_never_appears_in_clean_event_bytes(ingestor: Ingestor, encode: Any) -> None:
    out = ingestor.ingest(encode(flat()), NOW)
    assert isinstance(out, CleanEvent)
    data = get_codec("CleanEvent").encode_record(clean_event_to_record(out))
    assert PATIENT.encode() not in data
    assert PSEUDONYM.encode() in data
    assert PATIENT not in repr(out)
    assert clean_event_from_record(get_codec("CleanEvent").decode_record(data)) == out


def test_pseudonymize_keeps_everything_but_the_patient_id() -> None:
    raw = validate_event(flat())
    clean = pseudonymize(raw, Pseudonymizer(KEY))
    assert (clean.event_id, clean.event_type, clean.occurred_at, clean.practice_id) == (
        raw.event_id, raw.event_type, raw.occurred_at, raw.practice_id,
    )  # fmt: skip
    assert clean.details == raw.details
    assert clean.patient_pseudonym == PSEUDONYM


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"garbage", "undecodable"),
        (b"\xc3\x01\x00", "undecodable"),
        (b"\x00\x00\x00\x00\x07body", "undecodable"),
        (b"[1, 2]", "not_an_object"),
        (b"{not json", "invalid_json"),
        (b"{\xff\xfe}", "bad_encoding"),
        (b"\xef\xbb\xbf" + as_json(flat()), "bad_encoding"),
        (json.dumps(flat()).encode("utf-16"), "bad_encoding"),
        (b"[" * 1000, "invalid_json"),
        (b" [1, 2]", "not_an_object"),
        (b" 42", "not_an_object"),
    ],
)
def test_undecodable_input(ingestor: Ingestor, data: bytes, reason: str) -> None:
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    assert out.reason == reason
    assert out.event_id is None


def test_empty_message(ingestor: Ingestor) -> None:
    out = ingestor.ingest(b"", NOW)
    assert out == Rejected("undecodable", "empty message")


@pytest.mark.parametrize("encode", [as_json], ids=["json"])
def test_invalid_event_keeps_ids_and_names_the_field(ingestor: Ingestor, encode: Any) -> None:
    out = ingestor.ingest(encode(flat(category="urgent")), NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field, out.event_id, out.practice_id) == (
        "bad_enum", "category", "ev-1", "practice-a",
    )  # fmt: skip


def test_non_string_ids_are_not_carried(ingestor: Ingestor) -> None:
    out = ingestor.ingest(as_json(flat(event_id=5, practice_id=["x"])), NOW)  # type: ignore[arg-type]
    assert isinstance(out, Rejected)
    assert out.reason == "wrong_type"
    assert (out.event_id, out.practice_id) == (None, None)


def test_an_amount_too_large_for_avro_is_a_dead_letter_not_a_crash(ingestor: Ingestor) -> None:
    data = as_json(
        flat(
            event_type="payment.made",
            payment_id="pay-1",
            amount_cents=10**20,
            currency="USD",
            channel="portal",
        )
    )
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field) == ("wrong_type", "amount_cents")


def test_avro_details_of_another_type_are_refused(ingestor: Ingestor) -> None:
    record = raw_event_to_record(validate_event(flat()))
    record["details"] = ("portalpulse.PortalLogin", {"channel": "web"})
    out = ingestor.ingest(get_codec("RawEvent").encode_record(record), NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field, out.event_id, out.practice_id) == (
        "details_mismatch", "details", "ev-1", "practice-a",
    )  # fmt: skip
    assert out.detail == "details are a PortalLogin record but message.sent needs MessageSent"


def test_a_json_details_mismatch_marker_is_not_echoed(ingestor: Ingestor) -> None:
    out = ingestor.ingest(as_json(flat(_details_mismatch="MRN-SECRET", event_type=["x"])), NOW)
    assert isinstance(out, Rejected)
    assert out.reason == "details_mismatch"
    assert "MRN-SECRET" not in out.detail


@pytest.mark.parametrize("encode", [as_json, as_avro], ids=["json", "avro"])
@pytest.mark.parametrize(
    "at",
    ["1999-12-31T23:59:59Z", "2199-01-01T00:00:00Z", "2026-01-07T12:00:01Z"],
    ids=["ancient", "far-future", "just-over-a-day-ahead"],
)
def test_absurd_timestamps_rejected(ingestor: Ingestor, encode: Any, at: str) -> None:
    out = ingestor.ingest(encode(flat(occurred_at=at)), NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field) == ("timestamp_out_of_range", "occurred_at")


def test_timestamp_check_uses_the_wall_clock_by_default(ingestor: Ingestor) -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    out = ingestor.ingest(as_json(flat(occurred_at=future)))
    assert isinstance(out, Rejected)
    assert out.reason == "timestamp_out_of_range"
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert isinstance(ingestor.ingest(as_json(flat("ev-2", occurred_at=recent))), CleanEvent)


def test_clock_check_can_be_disabled_for_offline_files() -> None:
    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), check_clock=False)
    out = ingestor.ingest(as_json(flat(occurred_at="1999-12-31T23:59:59Z")))
    assert isinstance(out, CleanEvent)


def test_bounds_from_settings() -> None:
    bounds = bounds_from(60.0, 2)
    assert bounds == TimeBounds(timedelta(seconds=60), timedelta(days=2))
    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), bounds=bounds)
    ahead = (NOW + timedelta(minutes=2)).isoformat()
    assert isinstance(ingestor.ingest(as_json(flat(occurred_at=ahead)), NOW), Rejected)


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letter_keeps_the_raw_bytes_and_reason(ingestor: Ingestor) -> None:
    data = as_json(flat(amount_cents=1, category=None))
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    record = out.dead_letter(data, "portal.raw.portal", 2, 41, NOW)
    assert record == {
        "reason": "missing_field",
        "detail": "missing required field category",
        "field": "category",
        "source_topic": "portal.raw.portal",
        "source_partition": 2,
        "source_offset": 41,
        "event_id": "ev-1",
        "practice_id": "practice-a",
        "received_at": NOW,
        "raw": data,
        "raw_length": len(data),
        "raw_sha256": hashlib.sha256(data).hexdigest(),
        "raw_truncated": False,
    }
    codec = get_codec("DeadLetter")
    assert codec.decode_record(codec.encode_record(record)) == record


def test_dead_letter_of_garbage(ingestor: Ingestor) -> None:
    data = b"\x01\x02garbage"
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    record = out.dead_letter(data, "portal.raw.ehr", 0, 0, NOW)
    assert record["raw"] == data
    assert record["reason"] == "undecodable"
    assert record["event_id"] is None


# -- duplicates ---------------------------------------------------------------------------------


def test_duplicates_are_dropped_and_counted(ingestor: Ingestor) -> None:
    assert isinstance(ingestor.ingest(as_json(flat()), NOW), CleanEvent)
    assert ingestor.ingest(as_json(flat()), NOW) is None
    assert ingestor.ingest(as_avro(flat()), NOW) is None  # same event_id, other encoding
    assert ingestor.duplicates == 2
    assert isinstance(ingestor.ingest(as_json(flat("ev-2")), NOW), CleanEvent)
    assert ingestor.duplicates == 2


def test_rejected_events_do_not_poison_dedup(ingestor: Ingestor) -> None:
    assert isinstance(ingestor.ingest(as_json(flat(category="urgent")), NOW), Rejected)
    assert isinstance(ingestor.ingest(as_json(flat()), NOW), CleanEvent)
    assert ingestor.duplicates == 0


def test_ingestor_dedup_capacity_is_bounded() -> None:
    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), dedup_capacity=2)
    for eid in ("a", "b", "c"):
        assert isinstance(ingestor.ingest(as_json(flat(eid)), NOW), CleanEvent)
    assert len(ingestor.dedup) == 2
    assert isinstance(ingestor.ingest(as_json(flat("a")), NOW), CleanEvent)  # forgotten
    assert ingestor.ingest(as_json(flat("c")), NOW) is None
    assert ingestor.duplicates == 1


def test_deduplicator_is_an_lru() -> None:
    dedup = Deduplicator(3)
    assert [dedup.seen(x) for x in "abc"] == [False, False, False]
    assert dedup.seen("a") is True  # refreshes "a": "b" is now the oldest
    assert dedup.seen("d") is False  # evicts "b"
    assert len(dedup) == 3
    assert dedup.seen("a") is True
    assert dedup.seen("c") is True
    assert dedup.seen("d") is True
    assert dedup.seen("b") is False  # was evicted; now remembered again, evicting "a"
    assert dedup.seen("a") is False


def test_deduplicator_never_exceeds_capacity() -> None:
    dedup = Deduplicator(10)
    for i in range(1000):
        dedup.seen(str(i))
        assert len(dedup) <= 10
    assert all(dedup.seen(str(i)) for i in range(990, 1000))


def test_deduplicator_reports_adds_and_evictions_and_can_be_restored() -> None:
    from portal_pulse.ingest import Deduplicator

    added: list[tuple[str, int]] = []
    evicted: list[tuple[str, int]] = []
    dedup = Deduplicator(
        2, on_add=lambda e, p: added.append((e, p)), on_evict=lambda e, p: evicted.append((e, p))
    )
    assert not dedup.seen("a", 1)
    assert not dedup.seen("b", 2)
    assert dedup.seen("a", 1)  # a is now the most recent
    assert not dedup.seen("c", 3)  # evicts b, the least recently seen
    assert added == [("a", 1), ("b", 2), ("c", 3)]
    assert evicted == [("b", 2)]

    restarted = Deduplicator(2)
    restarted.restore([("a", 1), ("c", 3), ("x", 0)])  # capacity still holds
    assert len(restarted) == 2
    assert restarted.seen("a") and restarted.seen("c")


def test_admit_takes_an_already_validated_event_through_clock_dedup_and_pseudonym() -> None:
    from datetime import UTC, datetime

    from portal_pulse.ingest import Ingestor, Rejected
    from portal_pulse.pseudonym import Pseudonymizer
    from schemas.model import CleanEvent, RawEvent
    from schemas.serializer import get_codec

    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(b"k"))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    ok = RawEvent("a1", "record.viewed", datetime(2026, 2, 1, tzinfo=UTC), "P1", "MRN-1", {})
    clean = ingestor.admit(ok, now)
    assert isinstance(clean, CleanEvent) and clean.patient_pseudonym != "MRN-1"
    assert ingestor.admit(ok, now) is None, "duplicate"
    future = RawEvent("a2", "record.viewed", datetime(2027, 1, 1, tzinfo=UTC), "P1", "MRN-1", {})
    rejected = ingestor.admit(future, now)
    assert isinstance(rejected, Rejected) and rejected.reason == "timestamp_out_of_range"
