"""The event-time clock (SPEC §7): latest occurred_at, idle advance after a grace, never back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.domain.clock import EventClock

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
H = timedelta(hours=1)


def test_empty_clock_has_no_time() -> None:
    clock = EventClock()
    assert clock.now() is None
    assert clock.now(123.0) is None
    assert clock.snapshot() is None


def test_observe_takes_the_latest_event_time() -> None:
    clock = EventClock()
    assert clock.observe(T0) == T0
    assert clock.observe(T0 + 5 * S) == T0 + 5 * S
    assert clock.now() == T0 + 5 * S


def test_observe_never_moves_back() -> None:
    clock = EventClock()
    clock.observe(T0 + 10 * S, wall=100.0)
    assert clock.observe(T0, wall=100.1) == T0 + 10 * S
    assert clock.now() == T0 + 10 * S
    assert clock.observe(T0 - timedelta(days=1)) == T0 + 10 * S


def test_idle_advance_only_after_grace() -> None:
    clock = EventClock(idle_grace=0.5)
    clock.observe(T0, wall=100.0)
    assert clock.now(100.0) == T0
    assert clock.now(100.49) == T0
    assert clock.now(100.5) == T0 + timedelta(seconds=0.5)
    assert clock.now(130.0) == T0 + 30 * S
    assert clock.now(130.0, idle_allowed=False) == T0  # pure event time on request
    assert clock.now(None) == T0


def test_a_new_event_restarts_the_grace() -> None:
    clock = EventClock(idle_grace=2.0)
    clock.observe(T0, wall=0.0)
    clock.observe(T0 + S, wall=1.0)  # within grace: the event time wins
    assert clock.now(2.0) == T0 + S  # 1 s since the last event: within grace
    assert clock.now(4.0) == T0 + 4 * S
    # An event after a long idle spell keeps the idle time it has reached, then waits again.
    assert clock.observe(T0 + 2 * S, wall=11.0) == T0 + 11 * S
    assert clock.now(12.0) == T0 + 11 * S


def test_an_event_older_than_the_idle_clock_keeps_the_idle_time() -> None:
    clock = EventClock(idle_grace=0.5)
    clock.observe(T0, wall=0.0)
    assert clock.now(60.0) == T0 + 60 * S
    assert clock.observe(T0 + 10 * S, wall=60.0) == T0 + 60 * S
    assert clock.now(60.1) == T0 + 60 * S
    assert clock.observe(T0 + 90 * S, wall=60.2) == T0 + 90 * S


def test_wall_readings_before_the_anchor_do_not_move_the_clock() -> None:
    clock = EventClock()
    clock.observe(T0, wall=50.0)
    assert clock.now(10.0) == T0


def test_run_to() -> None:
    clock = EventClock()
    assert clock.run_to(T0) == T0
    assert clock.run_to(T0 + H) == T0 + H
    assert clock.run_to(T0) == T0 + H  # never backwards
    assert clock.observe(T0 + 30 * S) == T0 + H


def test_snapshot_and_restore() -> None:
    clock = EventClock()
    clock.observe(T0 + 7 * S)
    snap = clock.snapshot()
    assert snap == (T0 + 7 * S).isoformat()
    restored = EventClock()
    restored.restore(snap)
    assert restored.now() == T0 + 7 * S
    assert restored.now().tzinfo is not None
    restored.restore(T0.isoformat())  # an older snapshot does not move it back
    assert restored.now() == T0 + 7 * S
    empty = EventClock()
    empty.restore(None)
    assert empty.now() is None


def test_restored_clock_idles_from_its_first_wall_reading() -> None:
    # Monotonic readings start at an arbitrary point (often the host's uptime): a restored clock
    # must not jump ahead by that amount on its first tick.
    clock = EventClock(idle_grace=0.5)
    clock.restore(T0.isoformat())
    assert clock.now(86_400.0) == T0
    assert clock.now(86_401.0) == T0 + S
    assert clock.observe(T0 - S, wall=86_402.0) == T0 + 2 * S


def test_restored_clock_observe_does_not_jump() -> None:
    clock = EventClock()
    clock.restore(T0.isoformat())
    assert clock.observe(T0 + S, wall=1_000_000.0) == T0 + S
    assert clock.now(1_000_000.2) == T0 + S


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), st.integers(-10_000, 10_000), st.floats(0, 30)),
        st.tuples(st.just("now"), st.just(0), st.floats(0, 30)),
        st.tuples(st.just("restart"), st.just(0), st.floats(0, 30)),
    ),
    max_size=40,
)


@given(ops=_ops, grace=st.floats(0, 5), start=st.floats(0, 1e7))
def test_clock_is_monotone(ops: list[tuple[str, int, float]], grace: float, start: float) -> None:
    """observe/now with increasing wall readings never go back, across restarts from a snapshot."""
    clock = EventClock(idle_grace=grace)
    wall = start
    last: datetime | None = None
    for op, offset_ms, step in ops:
        wall += step
        at = T0 + timedelta(milliseconds=offset_ms)
        if op == "observe":
            value = clock.observe(at, wall)
            assert value >= at
        elif op == "now":
            value = clock.now(wall)
        else:  # a worker restart: the clock comes back from the last time it reported
            clock = EventClock(idle_grace=grace)
            clock.restore(last.isoformat() if last else None)
            value = clock.now(wall)
        if value is None:
            assert last is None
            continue
        if last is not None:
            assert value >= last
        last = value


@given(
    ats=st.lists(st.integers(-10_000, 10_000), max_size=30),
    until=st.integers(-10_000, 10_000),
)
def test_pure_event_time_is_the_running_maximum(ats: list[int], until: int) -> None:
    clock = EventClock()
    for i, ms in enumerate(ats):
        assert clock.observe(T0 + timedelta(milliseconds=ms)) == T0 + timedelta(
            milliseconds=max(ats[: i + 1])
        )
    final = clock.run_to(T0 + timedelta(milliseconds=until))
    assert final == T0 + timedelta(milliseconds=max([*ats, until]))


# -- no live clock runs past the wall clock (SPEC §7) ---------------------------------------------


def test_an_event_stamped_ahead_moves_the_clock_only_to_now() -> None:
    clock = EventClock(idle_grace=0.5)
    now = T0
    assert clock.observe(T0 - H, wall=0.0, not_after=now) == T0 - H
    assert clock.observe(T0 + 4 * 60 * S, wall=1.0, not_after=now) == now
    # As the wall clock moves on, so may the clock, but never past it.
    assert clock.now(1.2, not_after=now + S) == now  # within the grace: event time
    assert clock.now(11.0, not_after=now + 5 * S) == now + 5 * S
    assert clock.now(11.0, idle_allowed=False, not_after=now + 5 * S) == now
    assert clock.observe(T0 + 4 * 60 * S, wall=12.0, not_after=now + 12 * S) == now + 12 * S
    # Without a cap (replay, tests) the event's time is taken as it is.
    assert clock.observe(T0 + 4 * 60 * S) == T0 + 4 * 60 * S


def test_a_clock_restored_past_now_holds_until_now_catches_up() -> None:
    clock = EventClock(idle_grace=0.5)
    clock.restore((T0 + H).isoformat())  # written before the wall clock stepped back
    assert clock.now(0.0, not_after=T0) == T0 + H
    assert clock.now(100.0, not_after=T0) == T0 + H  # never back
    assert clock.observe(T0, wall=100.0, not_after=T0) == T0 + H


def test_restore_refuses_what_snapshot_never_writes() -> None:
    for bad in ("yesterday", "2026-01-05T09:00:00", 17, ["2026-01-05T09:00:00+00:00"]):
        clock = EventClock()
        clock.restore(T0.isoformat())
        try:
            clock.restore(bad)  # type: ignore[arg-type]
        except ValueError:
            pass
        else:
            raise AssertionError(f"{bad!r} restored")
        assert clock.now() == T0


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["observe", "now"]),
            st.integers(-86_400_000, 86_400_000),  # an event up to a day either side of now
            st.floats(0, 30),  # seconds of wall time passing before the operation
        ),
        max_size=40,
    ),
    grace=st.floats(0, 5),
    start=st.integers(-86_400_000, 0),
)
def test_whatever_events_arrive_the_clock_never_exceeds_now(
    ops: list[tuple[str, int, float]], grace: float, start: int
) -> None:
    """The clock starts at or before now; every later value is at most the ``now`` supplied
    with it, and never below the one before."""
    clock = EventClock(idle_grace=grace)
    clock.observe(T0 + timedelta(milliseconds=start), 0.0, not_after=T0)
    wall, last = 0.0, clock.now()
    assert last is not None
    for op, offset_ms, step in ops:
        wall += step
        now = T0 + timedelta(seconds=wall)
        at = now + timedelta(milliseconds=offset_ms)
        if op == "observe":
            value = clock.observe(at, wall, not_after=now)
        else:
            value = clock.now(wall, not_after=now)
        assert value is not None
        assert value <= now
        assert value >= last
        last = value
