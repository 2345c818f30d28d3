"""Practice-local calendar dates, in Python and as rows ClickHouse can join.

ClickHouse only takes a constant time-zone argument, but every practice has its own zone. So SQL
finds an instant's local date with an ASOF join on ``local_days``: one row per zone and local
date holding the UTC instant of that date's local midnight. The latest midnight at or before an
instant names its local date — correct across daylight-saving changes, with no per-row
time-zone work and nothing extra stored on the event rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import BUILTIN_DEFAULTS

if TYPE_CHECKING:
    from portal_pulse.reports.reads import ReadModel

__all__ = [
    "LOCAL_DAYS_FIRST",
    "LOCAL_DAYS_LAST",
    "configured_timezone",
    "format_local",
    "local_midnights",
    "practice_timezone",
    "to_local",
]

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


def practice_timezone(
    source: ReadModel | Client, practice_id: str, fallback: str | Callable[[], str] | None = None
) -> str:
    """The practice's IANA zone as the metrics views see it: its ``practices`` row, else the
    ``default`` row, else ``fallback`` (the configured practices file; a callable is only called
    when needed), else the built-in default.

    The worker writes these rows when it starts and ``replay`` when it finishes
    (``practices_sync``), so reports show times in the same zone the monthly figures are cut in.
    """
    from portal_pulse.reports.reads import reads_of

    zone = reads_of(source).practice_zone(practice_id)
    if not zone and fallback is not None:
        zone = fallback() if callable(fallback) else fallback
    return zone or str(BUILTIN_DEFAULTS["timezone"])


def to_local(at: datetime, timezone: str) -> datetime:
    """``at`` in ``timezone`` (a naive ``at`` is taken as UTC, as chDB hands it back)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(timezone))


def format_local(at: datetime, timezone: str, *, seconds: bool = False) -> str:
    """``2025-11-13 09:30 EST``: a wall-clock reading in the zone, with the zone's abbreviation
    (or its UTC offset where the zone has no abbreviation), so it cannot be read as UTC."""
    local = to_local(at, timezone)
    abbreviation = local.tzname() or ""
    if not abbreviation or abbreviation[0] in "+-":
        abbreviation = "UTC" + local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    return local.strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "")) + " " + abbreviation


def configured_timezone(practices_file: str | Path | None, practice_id: str) -> str:
    """The practice's zone from the practices file (the default rules for an unlisted id)."""
    from portal_pulse.domain.practices import Practices

    return Practices.load(practices_file).for_practice(practice_id).timezone
