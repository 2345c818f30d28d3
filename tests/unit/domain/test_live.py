"""Live rolling metrics: today and trailing seven days, on event time, by local day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from portal_pulse.domain.followups import FollowupMachine
from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.practices import StaleThresholds
from portal_pulse.engine import DictStore, Engine
from schemas.model import CleanEvent

NY = ZoneInfo("America/New_York")


def local_date(practice: str, at: datetime) -> date:
    return at.astimezone(NY).date()


def ev(n: int, kind: str, at: datetime, patient: str = "a" * 32, **details: object) -> CleanEvent:
    return CleanEvent(f"e{n}", kind, at.astimezone(UTC), "P1", patient, dict(details))


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=NY)


class _Out:
    def alert(self, alert: object) -> None:
        pass

    def response(self, fact: object) -> None:
        pass


def feeder(live: LiveMetrics) -> Engine:
    """The follow-up state is where each patient's last login lives: an engine reports it."""
    machine = FollowupMachine(lambda _: StaleThresholds())
    return Engine([machine], {machine.name: DictStore()}, _Out(), on_change=live.on_state_change)


def feed(live: LiveMetrics, engine: Engine, *events: CleanEvent) -> None:
    for event in events:
        engine.on_event(event)
        live.apply(event)


def test_today_and_trailing_week_with_distinct_active_patients() -> None:
    live = LiveMetrics(DictStore(), local_date)
    events = [
        ev(1, "portal.login", at(1, 9), "a" * 32, channel="web"),
        ev(2, "portal.login", at(3, 9), "a" * 32, channel="web"),  # same patient again
        ev(3, "portal.login", at(3, 10), "b" * 32, channel="mobile_app"),
        ev(4, "portal.login", at(9, 23), "b" * 32, channel="web"),  # 23:00 local is still Mar 9
        ev(
            5,
            "appointment.booked",
            at(9, 10),
            appointment_id="x",
            channel="portal",
            appointment_type="other",
        ),
        ev(
            6,
            "appointment.booked",
            at(9, 11),
            appointment_id="y",
            channel="phone",
            appointment_type="other",
        ),
        ev(7, "phone.call", at(9, 12), call_id="c1", direction="inbound", reason="other"),
        ev(8, "phone.call", at(9, 12), call_id="c2", direction="outbound", reason="other"),
        ev(9, "message.sent", at(9, 8), thread_id="t1", message_id="m1", category="clinical"),
        ev(10, "message.sent", at(9, 8), thread_id="t2", message_id="m2", category="billing"),
        ev(11, "message.sent", at(9, 9), thread_id="t1", message_id="m3", category="clinical"),
        ev(
            12,
            "message.replied",
            at(9, 9),
            thread_id="t2",
            message_id="r1",
            staff_pool="billing",
            automated=True,
        ),
        ev(13, "message.replied", at(9, 10), thread_id="t1", message_id="r2", staff_pool="nurse"),
    ]
    feed(live, feeder(live), *events)
    row = live.row("P1", 0, at(9, 23) + timedelta(minutes=30))
    assert row.day == date(2026, 3, 9)
    assert row.today == {
        "logins": 1,
        "patient_messages": 3,
        "portal_bookings": 1,
        "total_bookings": 2,
        "inbound_calls": 1,
        "active_patients": 1,
    }
    # Window Mar 3..9: logins on Mar 3 (2) and Mar 9 (1); patient a last active Mar 3, b Mar 9.
    assert row.trailing_7d["logins"] == 3
    assert row.trailing_7d["active_patients"] == 2
    # t1 answered by a person; t2 only by an automated reply, so it is still open (billing).
    assert row.open_by_pool == {"provider": 0, "nurse": 0, "front_desk": 0, "billing": 1}


def test_patients_outside_the_window_drop_out_and_drain_reports_touched_practices() -> None:
    live = LiveMetrics(DictStore(), local_date)
    feed(live, feeder(live), ev(1, "portal.login", at(1, 9), channel="web"))
    assert [r.practice_id for r in live.drain(0, at(1, 10))] == ["P1"]
    assert live.drain(0, at(1, 10)) == []
    row = live.row("P1", 0, at(8, 10))  # window Mar 2..8
    assert row.trailing_7d["active_patients"] == 0
    assert row.trailing_7d["logins"] == 0


def test_last_login_days_are_rebuilt_from_the_follow_up_states() -> None:
    live = LiveMetrics(DictStore(), local_date)
    engine = feeder(live)
    feed(live, engine, ev(1, "portal.login", at(2, 9), "a" * 32, channel="web"))
    feed(live, engine, ev(2, "portal.login", at(4, 9), "a" * 32, channel="web"))
    feed(live, engine, ev(3, "portal.login", at(3, 9), "b" * 32, channel="web"))
    feed(live, engine, ev(4, "portal.login", at(1, 9), "b" * 32, channel="web"))  # late, older
    before = live.row("P1", 0, at(4, 12))
    assert (before.today["active_patients"], before.trailing_7d["active_patients"]) == (1, 2)
    restored = LiveMetrics(live.store, local_date)  # after a restart: histogram from the states
    restored.rebuild(0)
    engine.on_change = restored.on_state_change
    engine.rebuild([0])
    after = restored.row("P1", 0, at(4, 12))
    assert (after.today, after.trailing_7d) == (before.today, before.trailing_7d)
