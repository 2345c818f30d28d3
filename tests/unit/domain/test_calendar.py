"""BusinessCalendar: open hours, holidays, DST days, and the add/measure round trip."""

from __future__ import annotations

import time as timer
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal_pulse.domain.calendar import BusinessCalendar

NY = ZoneInfo("America/New_York")
LDN = ZoneInfo("Europe/London")
WEEKDAYS_9_TO_5 = {d: [(time(8), time(17))] for d in range(5)}
ALL_DAY = {d: [(time(0), time(0))] for d in range(7)}
NIGHT_SHIFT = {d: [(time(0), time(6)), (time(22), time(0))] for d in range(7)}
# 01:00-03:00 straddles both 2026 US changes (02:00 skipped / 01:00-02:00 repeated).
SMALL_HOURS = {d: [(time(1), time(3)), (time(9), time(12)), (time(13), time(17))] for d in range(7)}


def ny(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=NY)


def ldn(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=LDN)


def office() -> BusinessCalendar:
    return BusinessCalendar(
        "America/New_York", WEEKDAYS_9_TO_5, {date(2026, 1, 1), date(2026, 1, 19)}
    )


CALENDARS = {
    "ny_office": office(),
    "ny_lunch": BusinessCalendar(
        "America/New_York", {d: [(time(8), time(12)), (time(13), time(17))] for d in range(5)}
    ),
    "ny_24h": BusinessCalendar("America/New_York", ALL_DAY),
    "ny_night": BusinessCalendar("America/New_York", NIGHT_SHIFT, {date(2026, 3, 10)}),
    "ny_small_hours": BusinessCalendar("America/New_York", SMALL_HOURS),
    "ldn_24h": BusinessCalendar("Europe/London", ALL_DAY),
    "ldn_night": BusinessCalendar("Europe/London", NIGHT_SHIFT),
    "ldn_small_hours": BusinessCalendar("Europe/London", SMALL_HOURS),
}
DST_DAYS = [
    (ZoneInfo("America/New_York"), date(2026, 3, 8)),
    (ZoneInfo("America/New_York"), date(2026, 11, 1)),
    (ZoneInfo("Europe/London"), date(2026, 3, 29)),
    (ZoneInfo("Europe/London"), date(2026, 10, 25)),
]

calendars = st.sampled_from(sorted(CALENDARS))


@st.composite
def near_dst(draw: st.DrawFn) -> datetime:
    """An instant within a few days of one of the 2026 DST changes (or anywhere in 2026)."""
    if draw(st.booleans()):
        zone, day = draw(st.sampled_from(DST_DAYS))
        base = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        offset = draw(st.integers(min_value=-3 * 86400, max_value=3 * 86400))
        return base + timedelta(seconds=offset, microseconds=draw(st.integers(0, 999_999)))
    return draw(
        st.datetimes(
            min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
        )
    )


minutes = st.floats(min_value=0, max_value=6000, allow_nan=False, allow_infinity=False)


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(calendars, near_dst(), minutes)
def test_add_then_measure_round_trips(name: str, start: datetime, m: float) -> None:
    cal = CALENDARS[name]
    end = cal.add_business_minutes(start, m)
    assert end >= start
    assert end.tzinfo is UTC
    assert cal.business_minutes_between(start, end) == pytest.approx(m, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(calendars, near_dst(), minutes, minutes)
def test_add_is_monotone_in_minutes(name: str, start: datetime, m1: float, m2: float) -> None:
    cal = CALENDARS[name]
    lo, hi = sorted((m1, m2))
    assert cal.add_business_minutes(start, lo) <= cal.add_business_minutes(start, hi)


@settings(max_examples=200, deadline=None)
@given(calendars, near_dst(), st.integers(0, 5 * 86400), minutes)
def test_add_is_monotone_in_start(name: str, start: datetime, later_s: int, m: float) -> None:
    cal = CALENDARS[name]
    later = start + timedelta(seconds=later_s)
    assert cal.add_business_minutes(start, m) <= cal.add_business_minutes(later, m)
    assert cal.clock_start(start) <= cal.clock_start(later)


@settings(max_examples=200, deadline=None)
@given(calendars, near_dst())
def test_closed_time_never_counts(name: str, at: datetime) -> None:
    cal = CALENDARS[name]
    start = cal.clock_start(at)
    assert cal.business_minutes_between(at, start) == 0
    assert cal.is_open(start)
    close = cal.close_of_business_day(at)
    assert close > start
    reopen = cal.clock_start(close)
    assert cal.business_minutes_between(close, reopen) == 0
    if reopen > close:
        assert not cal.is_open(close)
        assert not cal.is_open(close + (reopen - close) / 2)


@settings(max_examples=200, deadline=None)
@given(calendars, near_dst(), st.integers(0, 4 * 86400), st.integers(0, 4 * 86400))
def test_measure_is_additive(name: str, a: datetime, s1: int, s2: int) -> None:
    cal = CALENDARS[name]
    b = a + timedelta(seconds=s1)
    c = b + timedelta(seconds=s2)
    whole = cal.business_minutes_between(a, c)
    parts = cal.business_minutes_between(a, b) + cal.business_minutes_between(b, c)
    assert whole == pytest.approx(parts, abs=1e-6)
    if c > a:
        assert cal.business_minutes_between(c, a) == 0


def wall_clock_open(cal: BusinessCalendar, at: datetime) -> bool:
    """Independent oracle: open when the local wall clock shows an open time on an open day."""
    local = at.astimezone(cal.zone)
    if local.date() in cal.holidays:
        return False
    for opens, closes in cal.weekly_hours.get(local.weekday(), ()):
        if opens <= local.time() and (closes == time(0) or local.time() < closes):
            return True
    return False


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["ny_office", "ny_lunch", "ny_24h", "ny_night", "ldn_24h", "ldn_night"]),
    st.sampled_from(DST_DAYS),
    st.integers(-36 * 60, 36 * 60),
    st.integers(0, 36 * 60),
)
def test_measure_matches_minute_by_minute_oracle_on_dst_days(
    name: str, dst: tuple[ZoneInfo, date], offset_min: int, span_min: int
) -> None:
    """Hours whose edges avoid the changeover hour agree with a wall-clock reading per minute."""
    cal = CALENDARS[name]
    zone, day = dst
    a = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC) + timedelta(minutes=offset_min)
    expected = sum(wall_clock_open(cal, a + timedelta(minutes=i)) for i in range(span_min))
    assert cal.business_minutes_between(a, a + timedelta(minutes=span_min)) == expected
    for i in range(0, span_min, 7):
        at = a + timedelta(minutes=i)
        assert cal.is_open(at) == wall_clock_open(cal, at)


# -- DST scenarios ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "day", "hours"),
    [
        ("ny_24h", date(2026, 3, 8), 23),
        ("ny_24h", date(2026, 11, 1), 25),
        ("ldn_24h", date(2026, 3, 29), 23),
        ("ldn_24h", date(2026, 10, 25), 25),
        ("ny_24h", date(2026, 3, 9), 24),
    ],
)
def test_around_the_clock_day_length_follows_dst(name: str, day: date, hours: int) -> None:
    cal = CALENDARS[name]
    start = datetime.combine(day, time(0), tzinfo=cal.zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=cal.zone)
    assert cal.business_minutes_between(start, end) == hours * 60
    assert cal.close_of_business_day(start) == end.astimezone(UTC)


def test_night_shift_across_the_change_counts_real_time() -> None:
    cal = CALENDARS["ny_night"]
    # Sat 22:00 -> Sun 06:00 around the spring change: 7 real hours; autumn: 9.
    assert cal.business_minutes_between(ny(2026, 3, 7, 22), ny(2026, 3, 8, 6)) == 7 * 60
    assert cal.business_minutes_between(ny(2026, 10, 31, 22), ny(2026, 11, 1, 6)) == 9 * 60
    assert cal.add_business_minutes(ny(2026, 3, 7, 22), 7 * 60) == ny(2026, 3, 8, 6)
    assert cal.add_business_minutes(ny(2026, 10, 31, 22), 9 * 60) == ny(2026, 11, 1, 6)
    ldn_cal = CALENDARS["ldn_night"]
    assert ldn_cal.business_minutes_between(ldn(2026, 3, 28, 22), ldn(2026, 3, 29, 6)) == 7 * 60
    assert ldn_cal.business_minutes_between(ldn(2026, 10, 24, 22), ldn(2026, 10, 25, 6)) == 9 * 60


def test_interval_spanning_the_skipped_and_repeated_hour() -> None:
    cal = CALENDARS["ny_small_hours"]
    # 01:00-03:00 on the spring day lasts one real hour (02:00-03:00 never happens) ...
    spring = cal.business_minutes_between(ny(2026, 3, 8, 0), ny(2026, 3, 8, 4))
    assert spring == 60
    # ... and three on the autumn day (01:00-02:00 happens twice).
    autumn = cal.business_minutes_between(ny(2026, 11, 1, 0), ny(2026, 11, 1, 4))
    assert autumn == 180
    assert cal.add_business_minutes(ny(2026, 11, 1, 0), 150) == datetime(
        2026, 11, 1, 7, 30, tzinfo=UTC
    )
    # A wall time inside the repeated hour is open on both passes.
    assert cal.is_open(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    assert cal.is_open(datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 EST


def test_opening_inside_the_skipped_hour_opens_at_the_jump() -> None:
    cal = BusinessCalendar("America/New_York", {6: [(time(2, 30), time(5))]})
    assert cal.clock_start(ny(2026, 3, 8, 0)) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert cal.business_minutes_between(ny(2026, 3, 8, 0), ny(2026, 3, 8, 12)) == 120
    # An interval wholly inside the skipped hour is simply not there that day.
    gone = BusinessCalendar("Europe/London", {6: [(time(1, 10), time(1, 50)), (time(9), time(10))]})
    assert gone.clock_start(ldn(2026, 3, 29, 0)) == ldn(2026, 3, 29, 9).astimezone(UTC)
    assert gone.business_minutes_between(ldn(2026, 3, 29), ldn(2026, 3, 30)) == 60
    assert gone.business_minutes_between(ldn(2026, 3, 22), ldn(2026, 3, 23)) == 100


def test_office_hours_in_utc_shift_with_dst() -> None:
    cal = office()
    # Friday before the change opens 13:00Z; Monday after it opens 12:00Z.
    assert cal.clock_start(ny(2026, 3, 6, 7)) == datetime(2026, 3, 6, 13, tzinfo=UTC)
    assert cal.clock_start(ny(2026, 3, 6, 18)) == datetime(2026, 3, 9, 12, tzinfo=UTC)
    # 540 minutes from Fri 16:00 EST: 60 on Friday, 480 on Monday -> Mon 16:00 EDT.
    assert cal.add_business_minutes(ny(2026, 3, 6, 16), 540) == ny(2026, 3, 9, 16)
    assert cal.business_minutes_between(ny(2026, 3, 6, 16), ny(2026, 3, 9, 16)) == 540


# -- plain scenarios -------------------------------------------------------------------------------


def test_is_open_at_edges() -> None:
    cal = office()
    assert cal.is_open(ny(2026, 1, 5, 8))
    assert cal.is_open(ny(2026, 1, 5, 16, 59, 59))
    assert not cal.is_open(ny(2026, 1, 5, 17))
    assert not cal.is_open(ny(2026, 1, 5, 7, 59, 59))
    assert not cal.is_open(ny(2026, 1, 10, 12))  # Saturday
    assert not cal.is_open(ny(2026, 1, 19, 12))  # holiday


def test_clock_start_skips_evenings_weekends_and_holidays() -> None:
    cal = office()
    assert cal.clock_start(ny(2026, 1, 5, 10)) == ny(2026, 1, 5, 10)
    assert cal.clock_start(ny(2026, 1, 5, 20)) == ny(2026, 1, 6, 8)
    assert cal.clock_start(ny(2026, 1, 9, 17)) == ny(2026, 1, 12, 8)  # Fri close -> Mon
    assert cal.clock_start(ny(2026, 1, 17, 12)) == ny(2026, 1, 20, 8)  # Sat, Mon holiday -> Tue
    assert cal.clock_start(ny(2025, 12, 31, 18)) == ny(2026, 1, 2, 8)  # New Year's Day
    assert cal.clock_start(ny(2026, 1, 5, 10)).tzinfo is UTC


def test_add_business_minutes() -> None:
    cal = office()
    assert cal.add_business_minutes(ny(2026, 1, 5, 20), 0) == ny(2026, 1, 6, 8)
    assert cal.add_business_minutes(ny(2026, 1, 5, 8), 540) == ny(2026, 1, 5, 17)
    assert cal.add_business_minutes(ny(2026, 1, 5, 8), 541) == ny(2026, 1, 6, 8, 1)
    assert cal.add_business_minutes(ny(2026, 1, 5, 9), 540) == ny(2026, 1, 6, 9)
    assert cal.add_business_minutes(ny(2026, 1, 16, 16), 120) == ny(2026, 1, 20, 9)
    assert cal.add_business_minutes(ny(2026, 1, 5, 9), 0.5) == ny(2026, 1, 5, 9, 0, 30)
    with pytest.raises(ValueError, match="non-negative"):
        cal.add_business_minutes(ny(2026, 1, 5, 9), -1)


def test_lunch_break_is_closed() -> None:
    cal = CALENDARS["ny_lunch"]
    assert not cal.is_open(ny(2026, 1, 5, 12, 30))
    assert cal.clock_start(ny(2026, 1, 5, 12, 30)) == ny(2026, 1, 5, 13)
    assert cal.add_business_minutes(ny(2026, 1, 5, 11), 120) == ny(2026, 1, 5, 14)
    assert cal.business_minutes_between(ny(2026, 1, 5), ny(2026, 1, 6)) == 480
    assert cal.close_of_business_day(ny(2026, 1, 5, 9)) == ny(2026, 1, 5, 17)


def test_close_of_business_day() -> None:
    cal = office()
    assert cal.close_of_business_day(ny(2026, 1, 5, 9)) == ny(2026, 1, 5, 17)
    assert cal.close_of_business_day(ny(2026, 1, 5, 17)) == ny(2026, 1, 6, 17)
    assert cal.close_of_business_day(ny(2026, 1, 9, 23)) == ny(2026, 1, 12, 17)


def test_business_minutes_between() -> None:
    cal = office()
    assert cal.business_minutes_between(ny(2026, 1, 5, 9), ny(2026, 1, 5, 9)) == 0
    assert cal.business_minutes_between(ny(2026, 1, 5, 10), ny(2026, 1, 5, 9)) == 0
    assert cal.business_minutes_between(ny(2026, 1, 9, 16), ny(2026, 1, 12, 9)) == 120
    assert cal.business_minutes_between(ny(2026, 1, 5, 18), ny(2026, 1, 6, 7)) == 0
    # Non-UTC aware inputs are fine.
    tokyo = ZoneInfo("Asia/Tokyo")
    a = ny(2026, 1, 5, 9).astimezone(tokyo)
    assert cal.business_minutes_between(a, ny(2026, 1, 5, 10)) == 60
    assert cal.local_date(datetime(2026, 1, 6, 3, tzinfo=UTC)) == date(2026, 1, 5)


def test_long_spans_are_fast() -> None:
    cal = office()
    began = timer.perf_counter()
    # A whole year of business time, and the measure back.
    end = cal.add_business_minutes(ny(2026, 1, 2, 8), 540 * 250)
    assert cal.business_minutes_between(ny(2026, 1, 2, 8), end) == 540 * 250
    assert cal.business_minutes_between(ny(2026, 1, 1), ny(2026, 7, 1)) > 0
    assert timer.perf_counter() - began < 2.0


# -- validation ------------------------------------------------------------------------------------


def test_no_open_hours_is_rejected() -> None:
    with pytest.raises(ValueError, match="no open hours"):
        BusinessCalendar("America/New_York", {})
    with pytest.raises(ValueError, match="no open hours"):
        BusinessCalendar("America/New_York", {0: []})


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({0: [(time(9), time(9))]}, "not before"),
        ({0: [(time(10), time(9))]}, "not before"),
        ({0: [(time(8), time(12)), (time(11), time(17))]}, "overlaps"),
        ({0: [(time(8), time(0)), (time(9), time(10))]}, "overlaps"),
        ({7: [(time(8), time(9))]}, "weekday"),
    ],
)
def test_bad_hours_are_rejected(hours: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BusinessCalendar("America/New_York", hours)


def test_unknown_zone_and_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValueError, match="time zone"):
        BusinessCalendar("Mars/Olympus_Mons", WEEKDAYS_9_TO_5)
    with pytest.raises(ValueError, match="aware"):
        office().is_open(datetime(2026, 1, 5, 9))


def test_touching_intervals_merge() -> None:
    cal = BusinessCalendar("America/New_York", {0: [(time(12), time(17)), (time(8), time(12))]})
    assert cal.weekly_hours == {0: ((time(8), time(17)),)}


def test_gives_up_when_holidays_close_every_open_day() -> None:
    first_monday = date(2026, 1, 5)
    mondays = {first_monday + timedelta(weeks=w) for w in range(600)}
    cal = BusinessCalendar("America/New_York", {0: [(time(8), time(17))]}, mondays)
    with pytest.raises(ValueError, match="no open time"):
        cal.clock_start(ny(2026, 1, 1))
    with pytest.raises(ValueError, match="no open time"):
        cal.add_business_minutes(ny(2026, 1, 1), 10)
