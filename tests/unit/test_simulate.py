"""The simulator must give a deterministic, valid, ordered stream showing the article's trends."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portal_pulse.simulate import (
    DUPLICATE,
    VALID,
    SimulationSpec,
    simulate,
    simulate_labelled,
    simulate_to_file,
)
from schemas.validation import InvalidEvent, validate_event

SPEC = SimulationSpec(practices=3, patients=300, months=3, seed=7)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(simulate(SPEC))


def _zones(spec: SimulationSpec) -> dict[str, ZoneInfo]:
    return {
        f"P{i + 1:03d}": ZoneInfo(spec.timezones[i % len(spec.timezones)])
        for i in range(spec.practices)
    }


def _at(ev: dict) -> datetime:
    return datetime.fromisoformat(ev["occurred_at"])


def _monthly(events: list[dict], spec: SimulationSpec) -> dict[tuple[str, int], Counter]:
    """Per (practice, month index) counters of what the tests look at."""
    zones = _zones(spec)
    out: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for ev in events:
        local = _at(ev).astimezone(zones[ev["practice_id"]])
        k = (local.year - spec.start.year) * 12 + local.month - spec.start.month
        c = out[(ev["practice_id"], k)]
        c[ev["event_type"]] += 1
        if ev["event_type"] == "appointment.booked":
            c["booked_" + ev["channel"]] += 1
        elif ev["event_type"] == "phone.call":
            c["call_" + ev["direction"]] += 1
    return out


def test_same_seed_same_stream_other_seed_differs(events: list[dict]) -> None:
    assert list(simulate(SPEC)) == events
    other = list(simulate(SimulationSpec(practices=3, patients=300, months=3, seed=8)))
    assert other != events


def test_every_event_is_valid_utc_and_in_range(events: list[dict]) -> None:
    lo = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(days=61)
    hi = datetime(2026, 4, 2, tzinfo=UTC)
    for ev in events:
        raw = validate_event(ev)
        assert ev["occurred_at"].endswith("Z")
        assert lo <= raw.occurred_at < hi
        assert ev["patient_id"].startswith(f"MRN-{ev['practice_id']}-")
    assert {ev["practice_id"] for ev in events} == {"P001", "P002", "P003"}


def test_sorted_by_time(events: list[dict]) -> None:
    times = [_at(ev) for ev in events]
    assert times == sorted(times)


def test_ids_unique(events: list[dict]) -> None:
    assert len({ev["event_id"] for ev in events}) == len(events)
    id_fields = {
        "message_id": None,
        "result_id": "result.posted",
        "appointment_id": None,
        "payment_id": None,
        "call_id": None,
        "refill_id": None,
        "survey_id": None,
        "encounter_id": None,
    }
    for name, only in id_fields.items():
        ids = [
            ev[name] for ev in events if name in ev and (only is None or ev["event_type"] == only)
        ]
        assert ids and len(set(ids)) == len(ids), name
    owners: dict[str, str] = {}
    for ev in events:
        if "thread_id" in ev:
            assert owners.setdefault(ev["thread_id"], ev["patient_id"]) == ev["patient_id"]


def test_replies_follow_a_patient_message(events: list[dict]) -> None:
    first_sent: dict[str, datetime] = {}
    replies = automated = 0
    for ev in events:
        if ev["event_type"] == "message.sent":
            first_sent.setdefault(ev["thread_id"], _at(ev))
        elif ev["event_type"] == "message.replied":
            assert ev["thread_id"] in first_sent
            assert first_sent[ev["thread_id"]] < _at(ev)
            replies += 1
            automated += ev["automated"]
    assert replies > 100 and 0 < automated < replies
    threads_with_reply = {e["thread_id"] for e in events if e["event_type"] == "message.replied"}
    assert len(threads_with_reply) < len(first_sent)  # a few threads are never answered


def test_staff_work_in_local_business_hours() -> None:
    """Across the March DST changes, postings are in opening hours and most replies too."""
    spec = SimulationSpec(practices=4, patients=200, months=1, start=date(2026, 3, 1), seed=3)
    zones = _zones(spec)
    replies = in_hours = 0
    for ev in simulate(spec):
        local = _at(ev).astimezone(zones[ev["practice_id"]])
        open_now = local.weekday() < 5 and 8 <= local.hour < 17
        if ev["event_type"] == "result.posted":
            assert open_now, ev
        elif ev["event_type"] == "message.replied" and not ev["automated"]:
            replies += 1
            in_hours += open_now
    assert replies and in_hours / replies > 0.85


def test_enrollment_rises_within_plausible_range(events: list[dict]) -> None:
    zones = _zones(SPEC)
    roster: dict[str, set[str]] = defaultdict(set)
    enrolled_month: dict[tuple[str, str], int] = {}
    for ev in events:
        pid = ev["practice_id"]
        if ev["event_type"] == "patient.seen":
            roster[pid].add(ev["patient_id"])
        elif ev["event_type"] in ("portal.enrolled", "portal.login"):
            local = _at(ev).astimezone(zones[pid])
            k = (local.year - 2026) * 12 + local.month - 1
            enrolled_month.setdefault((pid, ev["patient_id"]), k)
    for pid, patients in roster.items():
        assert len(patients) == SPEC.patients

        def rate(k: int, pid: str = pid) -> float:
            n = sum(1 for (p, _), m in enrolled_month.items() if p == pid and m <= k)
            return n / SPEC.patients

        first, last = rate(0), rate(SPEC.months - 1)
        assert 0.15 <= first <= 0.45, (pid, first)
        assert 0.55 <= last <= 0.80, (pid, last)
        assert last > first


def test_calls_fall_and_portal_bookings_rise(events: list[dict]) -> None:
    monthly = _monthly(events, SPEC)
    first = sum((monthly[(p, 0)] for p in ("P001", "P002", "P003")), Counter())
    last = sum((monthly[(p, SPEC.months - 1)] for p in ("P001", "P002", "P003")), Counter())
    assert last["call_inbound"] < 0.85 * first["call_inbound"]
    share_first = first["booked_portal"] / first["appointment.booked"]
    share_last = last["booked_portal"] / last["appointment.booked"]
    assert 0.05 <= share_first < share_last <= 0.45


def test_event_mix_covers_the_catalogue(events: list[dict]) -> None:
    types = Counter(ev["event_type"] for ev in events)
    assert len(types) == 16
    logins = [ev for ev in events if ev["event_type"] == "portal.login"]
    assert {ev["channel"] for ev in logins} == {"web", "mobile_app"}
    enrolled = [ev for ev in events if ev["event_type"] == "portal.enrolled"]
    assert any("method" not in ev for ev in enrolled)
    scores = [ev["score"] for ev in events if ev["event_type"] == "survey.response"]
    assert 3.8 <= sum(scores) / len(scores) <= 4.8


def test_bad_events_fail_validation_and_are_counted(tmp_path) -> None:
    spec = SimulationSpec(practices=2, patients=150, months=2, seed=5, bad_fraction=0.1)
    summary = simulate_to_file(spec, tmp_path / "stream.jsonl")
    lines = (tmp_path / "stream.jsonl").read_text().splitlines()
    assert len(lines) == summary.total
    seen: set[str] = set()
    valid = bad = dups = 0
    by_type: Counter[str] = Counter()
    for line in lines:
        obj = json.loads(line)
        assert obj.get("practice_id") and obj.get("event_id")
        try:
            validate_event(obj)
        except InvalidEvent:
            bad += 1
            continue
        if obj["event_id"] in seen:
            dups += 1
        else:
            valid += 1
            by_type[obj["event_type"]] += 1
            seen.add(obj["event_id"])
    assert (valid, bad, dups) == (summary.valid, summary.bad, summary.duplicates)
    assert dict(by_type) == summary.by_type
    assert 0.06 <= bad / len(lines) <= 0.14
    assert dups > 0 and len(summary.bad_by_kind) >= 6
    assert sum(summary.bad_by_kind.values()) == summary.bad


def test_bad_fraction_does_not_change_the_valid_stream() -> None:
    clean = SimulationSpec(practices=2, patients=100, months=1, seed=11)
    dirty = SimulationSpec(practices=2, patients=100, months=1, seed=11, bad_fraction=0.2)
    labelled = list(simulate_labelled(dirty))
    assert {label for label, _ in labelled} - {VALID, DUPLICATE}
    assert [obj for label, obj in labelled if label == VALID] == list(simulate(clean))


def test_spec_is_checked() -> None:
    with pytest.raises(ValueError):
        SimulationSpec(bad_fraction=1.0)
    with pytest.raises(ValueError):
        SimulationSpec(months=0)
    with pytest.raises(ValueError, match="time zone"):
        SimulationSpec(timezones=("Mars/Olympus",))
