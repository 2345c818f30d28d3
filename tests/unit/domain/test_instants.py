"""Integer instants: exact round trips, order and differences as the datetimes they stand for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.domain.instants import DAY_US, MINUTE_US, from_us, iso_of_us, to_us

# Aware instants anywhere in 1900..2200, in any fixed offset (whole minutes, as zones have).
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)


@given(instants)
def test_round_trip_is_exact_and_utc(at: datetime) -> None:
    back = from_us(to_us(at))
    assert back == at
    assert back.tzinfo is UTC
    assert iso_of_us(to_us(at)) == at.astimezone(UTC).isoformat()


@given(instants, instants)
def test_order_and_differences_are_those_of_the_datetimes(a: datetime, b: datetime) -> None:
    assert (to_us(a) < to_us(b)) == (a < b)
    assert (to_us(a) == to_us(b)) == (a == b)
    assert to_us(b) - to_us(a) == (b - a) // timedelta(microseconds=1)


@given(instants, st.integers(0, 10_000))
def test_whole_days_and_minutes_add_as_timedeltas(at: datetime, n: int) -> None:
    assert from_us(to_us(at) + n * DAY_US) == at + timedelta(days=n)
    assert from_us(to_us(at) + n * MINUTE_US) == at + timedelta(minutes=n)


def test_known_values() -> None:
    assert to_us(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert to_us(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1
    assert to_us(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    assert iso_of_us(1_767_603_600_000_000) == "2026-01-05T09:00:00+00:00"


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError):
        to_us(datetime(2026, 1, 5, 9, 0))
