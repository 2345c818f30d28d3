"""Ingest: bytes → a pseudonymized CleanEvent, a Rejected (dead letter) or None (duplicate)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portal_pulse.domain.practices import Practices
from portal_pulse.engine import DictStore, Engine
from portal_pulse.ingest import (
    Deduplicator,
    Ingestor,
    Rejected,
    Remembered,
    Verdict,
    bounds_from,
    fingerprint,
    pseudonymize,
)
from portal_pulse.pipeline import build_machines
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
KEY = b"unit-test-key-not-a-secret-32-bytes"
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


def as_avro_unchecked(obj: dict[str, Any]) -> bytes:
    """Avro of an event whose practice_id ``validate_event`` would refuse (a hostile source)."""
    valid = validate_event({**obj, "practice_id": "placeholder"})
    record = raw_event_to_record(valid)
    record["practice_id"] = obj["practice_id"]
    return get_codec("RawEvent").encode_record(record)


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
    [
        "1999-12-31T23:59:59Z",
        "2199-01-01T00:00:00Z",
        "2026-01-07T12:00:01Z",
        "2026-01-06T12:05:00.001Z",
    ],
    ids=["ancient", "far-future", "a-day-ahead", "just-over-five-minutes-ahead"],
)
def test_absurd_timestamps_rejected(ingestor: Ingestor, encode: Any, at: str) -> None:
    out = ingestor.ingest(encode(flat(occurred_at=at)), NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field) == ("timestamp_out_of_range", "occurred_at")


def test_five_minutes_ahead_is_still_accepted(ingestor: Ingestor) -> None:
    ahead = (NOW + timedelta(minutes=5)).isoformat()
    assert isinstance(ingestor.ingest(as_json(flat(occurred_at=ahead)), NOW), CleanEvent)


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
    seen = lambda x: dedup.check("P1", x, 7) is Verdict.DUPLICATE  # noqa: E731
    assert [seen(x) for x in "abc"] == [False, False, False]
    assert seen("a") is True  # refreshes "a": "b" is now the oldest
    assert seen("d") is False  # evicts "b"
    assert len(dedup) == 3
    assert seen("a") is True
    assert seen("c") is True
    assert seen("d") is True
    assert seen("b") is False  # was evicted; now remembered again, evicting "a"
    assert seen("a") is False


def test_deduplicator_never_exceeds_capacity() -> None:
    dedup = Deduplicator(10)
    for i in range(1000):
        dedup.check("P1", str(i), i)
        assert len(dedup) <= 10
    assert all(dedup.check("P1", str(i), i) is Verdict.DUPLICATE for i in range(990, 1000))


def test_deduplicator_keys_on_practice_and_event_id_and_compares_content() -> None:
    dedup = Deduplicator(10)
    assert dedup.check("P002", "r1", 1) is Verdict.NEW
    assert dedup.check("ATTACKER", "r1", 2) is Verdict.NEW, "another practice's id is its own"
    assert dedup.check("P002", "r1", 1) is Verdict.DUPLICATE
    assert dedup.check("P002", "r1", 3) is Verdict.CONFLICT
    assert dedup.check("P002", "r1", 1) is Verdict.DUPLICATE, "the first event stands"
    assert dedup.check("ATTACKER", "r1", 2) is Verdict.DUPLICATE
    assert len(dedup) == 2


def test_deduplicator_reports_adds_and_evictions_and_can_be_restored() -> None:
    added: list[tuple[str, str, int, int]] = []
    evicted: list[tuple[str | None, str, int]] = []
    dedup = Deduplicator(
        2,
        on_add=lambda *entry: added.append(entry),
        on_evict=lambda *entry: evicted.append(entry),
    )
    assert dedup.check("P1", "a", 10, 1) is Verdict.NEW
    assert dedup.check("P2", "a", 20, 2) is Verdict.NEW
    assert dedup.check("P1", "a", 10, 1) is Verdict.DUPLICATE  # P1/a is now the most recent
    assert dedup.check("P1", "a", 11, 1) is Verdict.CONFLICT  # nothing remembered or reported
    assert dedup.check("P3", "c", 2**64 - 1, 3) is Verdict.NEW  # evicts P2/a
    assert added == [("P1", "a", 1, 10), ("P2", "a", 2, 20), ("P3", "c", 3, 2**64 - 1)]
    assert evicted == [("P2", "a", 2)]

    restarted = Deduplicator(2)
    restarted.restore(
        [
            Remembered("P1", "a", 1, 10),
            Remembered("P3", "c", 3, 2**64 - 1),
            Remembered("P", "x", 0, 0),
        ]
    )
    assert len(restarted) == 2, "capacity still holds"
    assert restarted.check("P1", "a", 10) is Verdict.DUPLICATE
    assert restarted.check("P1", "a", 11) is Verdict.CONFLICT
    assert restarted.check("P3", "c", 2**64 - 1) is Verdict.DUPLICATE


def test_entries_from_an_older_version_still_catch_their_duplicates() -> None:
    """A changelog from before practices were part of the key has ids without practice or
    content: a repeat of one is a duplicate, as it was when it was written. Those entries are
    evicted first, and their evictions name no practice (the old changelog key)."""
    evicted: list[tuple[str | None, str, int]] = []
    dedup = Deduplicator(3, on_evict=lambda *entry: evicted.append(entry))
    dedup.restore([Remembered(None, "old-1", 4, None), Remembered(None, "old-2", 5, None)])
    assert len(dedup) == 2
    assert dedup.check("P1", "old-1", 99) is Verdict.DUPLICATE
    assert dedup.check("P1", "new-1", 1) is Verdict.NEW
    assert dedup.check("P1", "new-2", 2) is Verdict.NEW  # over capacity: the oldest old entry
    assert evicted == [(None, "old-2", 5)], "old-1 was refreshed by its repeat"
    assert dedup.check("P1", "new-3", 3) is Verdict.NEW
    assert evicted[-1] == (None, "old-1", 4)
    assert dedup.check("P1", "new-4", 4) is Verdict.NEW  # now the new entries take turns
    assert evicted[-1] == ("P1", "new-1", 0)
    assert dedup.check("P1", "old-1", 99) is Verdict.NEW, "forgotten like any other id"


def test_fingerprint_is_the_same_for_the_same_event_however_encoded() -> None:
    pseudonym = Pseudonymizer(KEY)
    base = pseudonymize(validate_event(flat()), pseudonym)
    same = [
        flat(occurred_at="2026-01-05T14:30:00Z"),
        flat(occurred_at="2026-01-05T14:30:00.000400+00:00"),  # stored to the millisecond
        dict(reversed(list(flat().items()))),
        flat(extra_field="ignored"),
    ]
    for obj in same:
        assert fingerprint(pseudonymize(validate_event(obj), pseudonym)) == fingerprint(base)
    other = [
        flat(occurred_at="2026-01-05T14:30:00.001Z"),
        flat(category="clinical"),
        flat(patient_id="MRN-OTHER"),
        flat(event_type="message.replied", staff_pool="nurse", category=None),
    ]
    prints = {fingerprint(pseudonymize(validate_event(obj), pseudonym)) for obj in other}
    assert len(prints) == len(other) and fingerprint(base) not in prints
    assert 0 <= fingerprint(base) < 2**64


def test_fingerprint_is_what_earlier_versions_stored() -> None:
    """The de-duplication changelog keeps fingerprints across upgrades: a changed formula would
    turn every repeat of a remembered event into a conflicting duplicate."""
    pseudonym = Pseudonymizer(KEY)
    assert fingerprint(pseudonymize(validate_event(flat()), pseudonym)) == 0x25BA299C8E35CD97
    clinical = pseudonymize(validate_event(flat(category="clinical")), pseudonym)
    assert fingerprint(clinical) == 0x72C86CA384E22C2D


def test_fingerprint_holds_no_unkeyed_hash_of_the_patient_id() -> None:
    """Taken of the pseudonymized event: another key gives another fingerprint, so it cannot be
    matched against hashes of candidate MRNs without the key."""
    raw = validate_event(flat())
    one = fingerprint(pseudonymize(raw, Pseudonymizer(KEY)))
    other = fingerprint(pseudonymize(raw, Pseudonymizer(KEY + b"-other")))
    assert one != other


def test_a_repeat_with_other_content_is_a_conflicting_duplicate(ingestor: Ingestor) -> None:
    assert isinstance(ingestor.ingest(as_json(flat()), NOW), CleanEvent)
    out = ingestor.ingest(as_json(flat(category="billing")), NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field, out.event_id, out.practice_id) == (
        "conflicting_duplicate", "event_id", "ev-1", "practice-a",
    )  # fmt: skip
    assert PATIENT not in out.detail and "billing" not in out.detail
    record = out.dead_letter(as_json(flat(category="billing")), "portal.raw.portal", 0, 9, NOW)
    codec = get_codec("DeadLetter")
    assert codec.decode_record(codec.encode_record(record))["reason"] == "conflicting_duplicate"
    assert ingestor.duplicates == 0, "a conflict is a dead letter, not a duplicate"
    # The first event stands: its own repeat is still a duplicate, in either encoding.
    assert ingestor.ingest(as_avro(flat()), NOW) is None
    assert ingestor.duplicates == 1
    # Another patient under the same ids is other content too.
    out = ingestor.ingest(as_json(flat(patient_id="MRN-OTHER")), NOW)
    assert isinstance(out, Rejected) and out.reason == "conflicting_duplicate"


def test_another_practice_may_use_the_same_event_id(ingestor: Ingestor) -> None:
    assert isinstance(ingestor.ingest(as_json(flat()), NOW), CleanEvent)
    other = ingestor.ingest(as_json(flat(practice_id="practice-b")), NOW)
    assert isinstance(other, CleanEvent) and other.practice_id == "practice-b"
    assert ingestor.duplicates == 0


@pytest.mark.parametrize(
    "practice", ["P9' OR '1'='1", "P001:MRN", "P001|x", "P 001", "x" * 65, "Ρ001"]
)
@pytest.mark.parametrize("encode", [as_json, as_avro_unchecked], ids=["json", "avro"])
def test_hostile_practice_ids_are_dead_lettered(
    ingestor: Ingestor, encode: Any, practice: str
) -> None:
    data = encode(flat(practice_id=practice))
    out = ingestor.ingest(data, NOW)
    assert isinstance(out, Rejected)
    assert (out.reason, out.field) == ("bad_practice_id", "practice_id")
    assert out.practice_id is None, "never carried to the dead letter's practice_id column"
    assert out.dead_letter(data, "portal.raw.portal", 0, 1, NOW)["practice_id"] is None
    assert len(ingestor.dedup) == 0


def test_the_pseudonym_input_cannot_be_made_ambiguous(ingestor: Ingestor) -> None:
    """("P001", "MRN:1") and ("P001:MRN", "1") once gave one pseudonym; the second is refused."""
    first = ingestor.ingest(as_json(flat(practice_id="P001", patient_id="MRN:1")), NOW)
    assert isinstance(first, CleanEvent)
    second = ingestor.ingest(as_json(flat("ev-2", practice_id="P001:MRN", patient_id="1")), NOW)
    assert isinstance(second, Rejected) and second.reason == "bad_practice_id"


# -- one practice reusing another's ids (issue #21) -----------------------------------------------

MONDAY = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)  # 09:00 in New York, the default zone


def _p002_threads() -> list[dict[str, Any]]:
    """Four patient messages at P002, each answered by staff an hour later (reply ids r1..r4)."""
    events = []
    for n in range(1, 5):
        common = {"practice_id": "P002", "patient_id": f"MRN-{n}", "thread_id": f"th-{n}"}
        sent = MONDAY + timedelta(minutes=n)
        events.append(
            {"event_id": f"m{n}", "event_type": "message.sent", "occurred_at": sent.isoformat(),
             "message_id": f"msg-{n}", "category": "clinical", **common}
        )  # fmt: skip
        events.append(
            {"event_id": f"r{n}", "event_type": "message.replied",
             "occurred_at": (sent + timedelta(hours=1)).isoformat(),
             "message_id": f"reply-{n}", "staff_pool": "nurse", **common}
        )  # fmt: skip
    return events


def _attacker() -> list[dict[str, Any]]:
    """Practice "ATTACKER" sends events under P002's reply ids, before P002's replies arrive."""
    return [
        {"event_id": f"r{n}", "event_type": "message.replied",
         "occurred_at": (MONDAY + timedelta(minutes=n + 1)).isoformat(), "practice_id": "ATTACKER",
         "patient_id": f"X-{n}", "thread_id": f"th-{n}", "message_id": f"fake-{n}",
         "staff_pool": "nurse"}
        for n in range(1, 5)
    ]  # fmt: skip


def _alerts_and_facts(arrivals: list[dict[str, Any]], practice: str) -> tuple[list, list]:
    """What the engine emits for ``practice``, fed as ``replay`` feeds it: ingest in arrival
    order, then every accepted event in event-time order, then the clock on two days."""
    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY), check_clock=False)
    accepted = []
    for n, obj in enumerate(arrivals):
        out = ingestor.ingest(as_json(obj))
        assert not isinstance(out, Rejected), out
        if isinstance(out, CleanEvent):
            accepted.append((out.occurred_at, n, out))
    machines = build_machines(Practices.load(None))
    outputs = _Collected()
    engine = Engine(machines, {m.name: DictStore() for m in machines}, outputs)
    for _, _, event in sorted(accepted, key=lambda item: item[:2]):
        engine.advance(event.occurred_at)
        engine.on_event(event)
    engine.advance(MONDAY + timedelta(days=2))
    return (
        [a for a in outputs.alerts if a.practice_id == practice],
        [f for f in outputs.responses if f.practice_id == practice],
    )


class _Collected:
    def __init__(self) -> None:
        self.alerts: list[Any] = []
        self.responses: list[Any] = []

    def alert(self, alert: Any) -> None:
        self.alerts.append(alert)

    def response(self, fact: Any) -> None:
        self.responses.append(fact)


def test_another_practice_reusing_ids_has_no_effect_on_p002() -> None:
    alone_alerts, alone_facts = _alerts_and_facts(_p002_threads(), "P002")
    assert len(alone_facts) == 4 and alone_alerts == [], "every message answered in an hour"
    # The attacker's events arrive first, interleaved and all before P002's replies.
    attacked = _attacker() + _p002_threads()
    alerts, facts = _alerts_and_facts(attacked, "P002")
    assert alerts == alone_alerts
    assert facts == alone_facts
    # The attacker's events were its own (accepted under its practice), not P002's.
    _, attacker_facts = _alerts_and_facts(attacked, "ATTACKER")
    assert attacker_facts == []


def test_admit_takes_an_already_validated_event_through_clock_dedup_and_pseudonym() -> None:
    from datetime import UTC, datetime

    from portal_pulse.ingest import Ingestor, Rejected
    from portal_pulse.pseudonym import Pseudonymizer
    from schemas.model import CleanEvent, RawEvent
    from schemas.serializer import get_codec

    ingestor = Ingestor(get_codec("RawEvent"), Pseudonymizer(KEY))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    ok = RawEvent("a1", "record.viewed", datetime(2026, 2, 1, tzinfo=UTC), "P1", "MRN-1", {})
    clean = ingestor.admit(ok, now)
    assert isinstance(clean, CleanEvent) and clean.patient_pseudonym != "MRN-1"
    assert ingestor.admit(ok, now) is None, "duplicate"
    future = RawEvent("a2", "record.viewed", datetime(2027, 1, 1, tzinfo=UTC), "P1", "MRN-1", {})
    rejected = ingestor.admit(future, now)
    assert isinstance(rejected, Rejected) and rejected.reason == "timestamp_out_of_range"
