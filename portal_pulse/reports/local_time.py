"""Practice-local calendar dates, in Python and as rows ClickHouse can join.

ClickHouse only takes a constant time-zone argument, but every practice has its own zone. So SQL
finds an instant's local date with an ASOF join on ``local_days``: one row per zone and local
date holding the UTC instant of that date's local midnight. The latest midnight at or before an
instant names its local date — correct across daylight-saving changes, with no per-row
time-zone work and nothing extra stored on the event rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["LOCAL_DAYS_FIRST", "LOCAL_DAYS_LAST", "local_midnights"]

LOCAL_DAYS_FIRST = date(2000, 1, 1)
LOCAL_DAYS_LAST = date(2099, 12, 31)
"""The span of ``local_days`` rows written per zone (about 36,500 rows, a few hundred kB)."""


def local_midnights(
    timezone: str, first: date = LOCAL_DAYS_FIRST, last: date = LOCAL_DAYS_LAST
) -> Iterator[tuple[datetime, date]]:
    """(UTC instant the local date starts, local date) for every date from first to last.

    Where midnight does not exist (a DST jump at 00:00) the day starts at the jump, which is what
    ``fold=0`` resolves to; where it happens twice, the first occurrence starts the day. A date a
    zone skipped altogether (Pacific/Apia, 2011-12-30) starts when the next one does, so only the
    next one is kept: one row per instant keeps the ASOF join unambiguous.
    """
    zone = ZoneInfo(timezone)
    one = timedelta(days=1)
    pending: tuple[datetime, date] | None = None
    day = first
    while day <= last:
        start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        if pending is not None and pending[0] != start:
            yield pending
        pending = (start, day)
        day += one
    if pending is not None:
        yield pending
