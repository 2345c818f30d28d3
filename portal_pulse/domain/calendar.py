"""Business time for one practice (SPEC §5, §7): open hours in its zone, weekends and holidays.

Opening hours are local wall times, so each day's intervals are converted to UTC separately;
arithmetic then runs on real (UTC) instants, which keeps it right across daylight-saving changes.
A wall time maps to the first instant the local clock reads that time or later: an ambiguous
time (clocks set back) means its first occurrence, a skipped time means the moment of the jump.
Work is done per day, never per minute, so long spans stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BusinessCalendar", "Interval"]

Interval = tuple[time, time]
"""An opening interval as local wall times; a close of 00:00 means midnight at the day's end."""

MAX_CLOSED_DAYS = 3660
_MIDNIGHT = time(0)
_CACHE_LIMIT = 4096
_ZERO = timedelta(0)


def _require_aware(at: datetime, name: str = "at") -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {at!r}")


class BusinessCalendar:
    """Open hours of one practice; every method takes aware datetimes and returns UTC ones."""

    def __init__(
        self,
        timezone: str,
        weekly_hours: Mapping[int, Sequence[Interval]],
        holidays: Iterable[date] = (),
    ) -> None:
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown time zone {timezone!r}") from exc
        self._timezone = timezone
        self._week = self._normalise_week(weekly_hours)
        if not any(self._week):
            raise ValueError("calendar has no open hours on any weekday")
        self._holidays = frozenset(holidays)
        for day in self._holidays:
            if not isinstance(day, date) or isinstance(day, datetime):
                raise ValueError(f"holiday {day!r} is not a date")
        self._cache: dict[date, tuple[tuple[datetime, datetime], ...]] = {}

    @staticmethod
    def _normalise_week(
        weekly_hours: Mapping[int, Sequence[Interval]],
    ) -> tuple[tuple[Interval, ...], ...]:
        """Validate per-weekday intervals; touching intervals are merged, overlaps rejected."""
        week: list[tuple[Interval, ...]] = []
        for key in weekly_hours:
            if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= 6:
                raise ValueError(f"weekday must be an int 0 (Mon) .. 6 (Sun), got {key!r}")
        for weekday in range(7):
            merged: list[Interval] = []
            for opens, closes in sorted(weekly_hours.get(weekday, ()), key=lambda iv: iv[0]):
                for t in (opens, closes):
                    if not isinstance(t, time) or t.tzinfo is not None:
                        raise ValueError(f"opening hours need naive datetime.time values: {t!r}")
                end_of_day = closes == _MIDNIGHT
                if not end_of_day and opens >= closes:
                    raise ValueError(f"weekday {weekday}: opening {opens} is not before {closes}")
                if merged:
                    prev_open, prev_close = merged[-1]
                    if prev_close == _MIDNIGHT or opens < prev_close:
                        raise ValueError(
                            f"weekday {weekday}: interval {opens}-{closes} overlaps "
                            f"{prev_open}-{prev_close}"
                        )
                    if opens == prev_close:
                        merged[-1] = (prev_open, closes)
                        continue
                merged.append((opens, closes))
            week.append(tuple(merged))
        return tuple(week)

    # -- introspection -------------------------------------------------------------------------

    @property
    def timezone(self) -> str:
        return self._timezone

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    @property
    def weekly_hours(self) -> dict[int, tuple[Interval, ...]]:
        return {day: ivs for day, ivs in enumerate(self._week) if ivs}

    @property
    def holidays(self) -> frozenset[date]:
        return self._holidays

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return (self._timezone, self._week, self._holidays) == (
            other._timezone,
            other._week,
            other._holidays,
        )

    def __hash__(self) -> int:
        return hash((self._timezone, self._week, self._holidays))

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar({self._timezone!r}, {self.weekly_hours!r}, "
            f"holidays={sorted(self._holidays)!r})"
        )

    # -- wall time -> instants -----------------------------------------------------------------

    def _wall_to_utc(self, day: date, at: time) -> datetime:
        """The first instant the local clock reads ``day at`` or later (see module docstring)."""
        local = datetime.combine(day, at, tzinfo=self._zone)
        first = local.astimezone(UTC)
        if first.astimezone(self._zone).replace(tzinfo=None) == local.replace(tzinfo=None):
            return first
        # Skipped wall time: the jump lies between the two offsets' readings; find it to the second.
        lo = local.replace(fold=1).astimezone(UTC)
        hi = first
        wall = local.replace(tzinfo=None)
        while hi - lo > timedelta(seconds=1):
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if mid <= lo:
                mid = lo + timedelta(seconds=1)
            if mid.astimezone(self._zone).replace(tzinfo=None) >= wall:
                hi = mid
            else:
                lo = mid
        return hi

    def _day_intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """UTC open intervals of one local date (empty on holidays and closed weekdays)."""
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        result: list[tuple[datetime, datetime]] = []
        if day not in self._holidays:
            for opens, closes in self._week[day.weekday()]:
                start = self._wall_to_utc(day, opens)
                if closes == _MIDNIGHT:
                    end = self._wall_to_utc(day + timedelta(days=1), _MIDNIGHT)
                else:
                    end = self._wall_to_utc(day, closes)
                if result:
                    start = max(start, result[-1][1])
                if end > start:
                    result.append((start, end))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        intervals = tuple(result)
        self._cache[day] = intervals
        return intervals

    def _intervals_after(self, at: datetime) -> Iterator[tuple[date, datetime, datetime]]:
        """Open intervals (local date, start, end) ending after ``at``, clipped to start at ``at``.

        Raises ValueError after MAX_CLOSED_DAYS consecutive days without open time.
        """
        day = self.local_date(at) - timedelta(days=1)
        closed_run = 0
        while True:
            found = False
            for start, end in self._day_intervals(day):
                if end > at:
                    found = True
                    yield day, max(start, at), end
            if found:
                closed_run = 0
            else:
                closed_run += 1
                if closed_run > MAX_CLOSED_DAYS:
                    raise ValueError(
                        f"no open time within {MAX_CLOSED_DAYS} days after {at.isoformat()}"
                    )
            day += timedelta(days=1)

    # -- public API ----------------------------------------------------------------------------

    def local_date(self, at: datetime) -> date:
        """The practice-local calendar date of an instant."""
        _require_aware(at)
        return at.astimezone(self._zone).date()

    def is_open(self, at: datetime) -> bool:
        _require_aware(at)
        at = at.astimezone(UTC)
        day = self.local_date(at)
        for d in (day - timedelta(days=1), day):
            for start, end in self._day_intervals(d):
                if start <= at < end:
                    return True
        return False

    def clock_start(self, at: datetime) -> datetime:
        """``at`` itself when open, otherwise the next opening instant."""
        _require_aware(at)
        at = at.astimezone(UTC)
        _, start, _ = next(self._intervals_after(at))
        return start

    def close_of_business_day(self, at: datetime) -> datetime:
        """Close of the last interval of the business day on which ``clock_start(at)`` falls."""
        _require_aware(at)
        at = at.astimezone(UTC)
        day, _, _ = next(self._intervals_after(at))
        return self._day_intervals(day)[-1][1]

    def add_business_minutes(self, start: datetime, minutes: float) -> datetime:
        """The instant after ``minutes`` of open time counted from ``start`` (or its next opening).

        Landing exactly on a close returns the close itself, not the next opening.
        """
        _require_aware(start, "start")
        if minutes < 0 or minutes != minutes:
            raise ValueError(f"minutes must be a non-negative number, got {minutes!r}")
        remaining = timedelta(minutes=minutes)
        for _, begin, end in self._intervals_after(start.astimezone(UTC)):
            span = end - begin
            if remaining <= span:
                return begin + remaining
            remaining -= span
        raise AssertionError("unreachable: _intervals_after never ends")  # pragma: no cover

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        """Open minutes in ``[a, b)``; 0 when ``b <= a``."""
        _require_aware(a, "a")
        _require_aware(b, "b")
        a = a.astimezone(UTC)
        b = b.astimezone(UTC)
        if b <= a:
            return 0.0
        total = _ZERO
        day = self.local_date(a) - timedelta(days=1)
        last = self.local_date(b)
        while day <= last:
            for start, end in self._day_intervals(day):
                lo = max(start, a)
                hi = min(end, b)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total / timedelta(minutes=1)
