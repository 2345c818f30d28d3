"""Put the practices' time zones and roster look-back where the monthly metrics' SQL can see them.

The monthly view reads ``practices`` for each practice's zone and look-back, and the rollup
(migration 0006) cuts local months with ``local_days``, the local midnights of every zone in use.
Both are upserts: calling this at start-up and after each processing run is cheap and
idempotent. A changed zone or look-back rebuilds that practice's rollup here
(portal_pulse/reports/rollup.py), and any change refreshes the stored monthly rows of every
practice (portal_pulse/reports/monthly_rows.py: the default row reaches every practice without
its own), so it shows on the next query.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import PracticeConfig, Practices
from portal_pulse.reports.local_time import LOCAL_DAYS_FIRST, LOCAL_DAYS_LAST, local_midnights
from portal_pulse.reports.monthly_rows import refresh_monthly_rows
from portal_pulse.reports.rollup import (
    built_with,
    effective_settings,
    rebuild_rollup,
    record_builds,
    wait_for_inserts_before,
)

__all__ = ["DEFAULT_ROW_ID", "sync_practices"]

DEFAULT_ROW_ID = "default"
"""The ``practices`` row the views fall back on for practices not synced yet (a reserved id)."""

_COLUMNS = ("practice_id", "timezone", "roster_lookback_days", "updated_at")


def sync_practices(client: Client, practices: Practices, practice_ids: Iterable[str] = ()) -> int:
    """Upsert the listed practices, ``practice_ids``, every practice in ``events`` and the default.

    Only rows that differ from what is stored are written. Practices whose monthly rollup was
    cut with another zone or look-back than the one now in force (their own row's, or the
    default's for practices without one) have it rebuilt. If anything changed, every stored
    monthly row is refreshed. Returns how many practice rows were written.
    """
    ids = set(practices.listed_ids) | set(practice_ids)
    ids |= {row[0] for row in client.query("SELECT DISTINCT practice_id FROM events").result_rows}
    ids.discard(DEFAULT_ROW_ID)
    wanted: dict[str, PracticeConfig] = {pid: practices.for_practice(pid) for pid in ids}
    wanted[DEFAULT_ROW_ID] = practices.default

    stored: dict[str, tuple[str, int]] = {
        pid: (tz, days)
        for pid, tz, days in client.query(
            "SELECT practice_id, timezone, roster_lookback_days FROM practices FINAL"
        ).result_rows
    }
    everyone = (ids | set(stored)) - {DEFAULT_ROW_ID}
    # A practice's rollup not recorded yet was cut with the settings in force until now.
    built = built_with(client)
    so_far = effective_settings(stored, everyone, DEFAULT_ROW_ID)
    unrecorded = {pid: so_far[pid] for pid in everyone if pid not in built}
    record_builds(client, unrecorded)
    built |= unrecorded

    # Local midnights first: the rollup's views cut rows in a zone only once it has them.
    _ensure_local_days(client, {cfg.timezone for cfg in wanted.values()})
    now = datetime.now(UTC)
    rows = [
        [pid, cfg.timezone, cfg.roster_lookback_days, now]
        for pid, cfg in sorted(wanted.items())
        if stored.get(pid) != (cfg.timezone, cfg.roster_lookback_days)
    ]
    if rows:
        client.insert("practices", rows, column_names=_COLUMNS)
    written = time.monotonic()
    after = stored | {pid: (cfg.timezone, cfg.roster_lookback_days) for pid, cfg in wanted.items()}
    in_force = effective_settings(after, everyone, DEFAULT_ROW_ID)
    moved = {pid: in_force[pid] for pid in everyone if built[pid] != in_force[pid]}
    if moved:
        if rows:
            wait_for_inserts_before(client, written)
        rebuild_rollup(client, moved)
        record_builds(client, moved)
    if rows or moved:
        refresh_monthly_rows(client)
    return len(rows)


def _ensure_local_days(client: Client, zones: set[str]) -> None:
    """Write the local midnights of every zone that does not have its full span yet."""
    complete = {
        row[0]
        for row in client.query(
            "SELECT timezone FROM local_days GROUP BY timezone "
            "HAVING min(local_date) <= {first:Date} AND max(local_date) >= {last:Date}",
            parameters={"first": LOCAL_DAYS_FIRST, "last": LOCAL_DAYS_LAST},
        ).result_rows
    }
    for zone in sorted(zones - complete):
        rows = [[zone, start, day] for start, day in local_midnights(zone)]
        client.insert("local_days", rows, column_names=("timezone", "starts_at", "local_date"))
