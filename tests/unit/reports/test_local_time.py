"""Practice-local times as reports show them, and which zone a practice's reports use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from portal_pulse.reports.local_time import (
    configured_timezone,
    format_local,
    practice_timezone,
    to_local,
)


def test_format_local_names_the_zone_and_follows_daylight_saving() -> None:
    winter, summer = (
        datetime(2026, 1, 15, 15, 30, tzinfo=UTC),
        datetime(2026, 7, 15, 15, 30, tzinfo=UTC),
    )
    assert format_local(winter, "America/New_York") == "2026-01-15 10:30 EST"
    assert format_local(summer, "America/New_York") == "2026-07-15 11:30 EDT"
    assert format_local(winter, "Europe/London", seconds=True) == "2026-01-15 15:30:00 GMT"
    # a zone without an abbreviation shows its offset, never a bare number
    assert format_local(winter, "America/Sao_Paulo") == "2026-01-15 12:30 UTC-03:00"
    assert format_local(datetime(2026, 1, 15, 15, 30), "UTC") == "2026-01-15 15:30 UTC"  # naive
    assert to_local(winter, "Asia/Kolkata").isoformat() == "2026-01-15T21:00:00+05:30"


def test_the_practices_row_wins_then_the_default_then_the_fallback(chdb_client: Client) -> None:
    listed, unlisted = f"tz-{uuid.uuid4().hex[:8]}", f"tz-{uuid.uuid4().hex[:8]}"
    chdb_client.insert(
        "practices",
        [[listed, "Europe/Berlin", 730, datetime.now(UTC)]],
        column_names=["practice_id", "timezone", "roster_lookback_days", "updated_at"],
    )
    assert practice_timezone(chdb_client, listed, "Asia/Tokyo") == "Europe/Berlin"
    default = chdb_client.query(
        "SELECT any(timezone) FROM practices FINAL WHERE practice_id = 'default'"
    ).result_rows[0][0]
    calls: list[int] = []

    def fallback() -> str:
        calls.append(1)
        return "Asia/Tokyo"

    assert practice_timezone(chdb_client, unlisted, fallback) == (default or "Asia/Tokyo")
    assert bool(calls) == (not default)  # the fallback is only consulted when needed
    practice_timezone(chdb_client, listed, fallback)
    assert len(calls) == (0 if default else 1)


def test_configured_timezone_reads_the_practices_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "practices.yaml"
    path.write_text(
        "practices:\n  default: {timezone: Europe/Paris}\n  P1: {timezone: Asia/Tokyo}\n"
    )
    assert configured_timezone(path, "P1") == "Asia/Tokyo"
    assert configured_timezone(path, "P2") == "Europe/Paris"
    assert configured_timezone(None, "P1") == "America/New_York"
