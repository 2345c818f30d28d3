"""When practices_sync rebuilds the monthly rollup (portal_pulse/reports/rollup.py), and how.

Row-level equality of the rollup with the query-time definition is in
tests/unit/sinks/test_monthly_rollup.py; these tests pin the decisions around it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.domain.practices import Practices
from portal_pulse.reports import practices_sync, rollup
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.reports.rollup import (
    effective_settings,
    rebuild_rollup,
    wait_for_inserts_before,
)
from schemas.model import CleanEvent
from sinks.rows import EVENT_COLUMNS, event_row


def test_effective_settings_fall_back_field_by_field_on_the_default_row() -> None:
    rows = {
        "default": ("America/New_York", 730),
        "a": ("Europe/London", 30),
        "b": ("", 0),
        "c": ("Asia/Kolkata", 0),
    }
    assert effective_settings(rows, ["a", "b", "c", "d"], "default") == {
        "a": ("Europe/London", 30),
        "b": ("America/New_York", 730),
        "c": ("Asia/Kolkata", 730),
        "d": ("America/New_York", 730),
    }
    assert effective_settings({}, ["a"], "default") == {"a": ("", 0)}


class FakeProcesses:
    """Answers the system.processes count with the numbers given, then 0."""

    def __init__(self, counts: list[int] | Exception) -> None:
        self.counts = counts
        self.asked = 0

    def query(self, sql: str, parameters: dict[str, Any]) -> Any:
        assert "system.processes" in sql and parameters["age"] >= 0
        self.asked += 1
        if isinstance(self.counts, Exception):
            raise self.counts
        count = self.counts.pop(0) if self.counts else 0
        return type("Result", (), {"result_rows": [[count]]})()


def test_waits_for_inserts_begun_before_the_change() -> None:
    fake = FakeProcesses([2, 1])
    assert wait_for_inserts_before(fake, 0.0, timeout=5) is True  # type: ignore[arg-type]
    assert fake.asked == 3


def test_gives_up_waiting_after_the_timeout_or_without_access(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert wait_for_inserts_before(FakeProcesses([5] * 100), 0.0, timeout=0.2) is False  # type: ignore[arg-type]
    denied = FakeProcesses(DatabaseError("ACCESS_DENIED"))
    assert wait_for_inserts_before(denied, 0.0) is False  # type: ignore[arg-type]
    assert "rebuilding anyway" in caplog.text and "cannot see running inserts" in caplog.text


@pytest.fixture
def practice(chdb_client: Client) -> str:
    p = f"rollup-{uuid.uuid4().hex[:8]}"
    rows = [
        event_row(CleanEvent(f"{p}-{n}", kind, at, p, f"{n:032x}", details))
        for n, (kind, at, details) in enumerate(
            [
                ("patient.seen", datetime(2026, 1, 31, 23, 30, tzinfo=UTC), {"encounter_id": "e"}),
                ("portal.login", datetime(2026, 2, 1, 0, 30, tzinfo=UTC), {"channel": "web"}),
                ("portal.login", datetime(2026, 2, 28, 23, 30, tzinfo=UTC), {"channel": "web"}),
            ]
        )
    ]
    chdb_client.insert("events", rows, column_names=list(EVENT_COLUMNS))
    return p


def months(db: Client, practice: str) -> list[tuple[str, int, int]]:
    return [
        tuple(r)
        for r in db.query(
            "SELECT month, active_users, unique_patients FROM monthly_portal_performance "
            "WHERE practice_id = {p:String} ORDER BY month",
            parameters={"p": practice},
        ).result_rows
    ]


def test_sync_rebuilds_only_practices_whose_zone_or_look_back_moved(
    chdb_client: Client, practice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebuilt: list[set[str]] = []
    real = practices_sync.rebuild_rollup

    def spy(client: Client, ids: set[str]) -> None:
        rebuilt.append(set(ids))
        real(client, ids)

    monkeypatch.setattr(practices_sync, "rebuild_rollup", spy)

    def sync(**settings: Any) -> None:
        sync_practices(chdb_client, Practices.from_mapping({"practices": {practice: settings}}))

    sync(timezone="UTC")
    assert practice in rebuilt[-1]
    assert months(chdb_client, practice) == [("2026-01", 0, 1), ("2026-02", 2, 1)]
    rebuilt.clear()
    sync(timezone="UTC")  # nothing changed
    assert all(practice not in ids for ids in rebuilt)
    sync(timezone="America/New_York")  # both logins fall on January's and February's last days
    assert practice in rebuilt[-1]
    assert months(chdb_client, practice) == [("2026-01", 1, 1), ("2026-02", 1, 1)]
    sync(timezone="America/New_York", roster_lookback_days=1)  # the visit leaves February
    assert practice in rebuilt[-1]
    assert months(chdb_client, practice) == [("2026-01", 1, 1), ("2026-02", 1, 0)]


def test_rebuilding_again_changes_nothing(chdb_client: Client, practice: str) -> None:
    sync_practices(
        chdb_client, Practices.from_mapping({"practices": {practice: {"timezone": "Asia/Kolkata"}}})
    )
    before = months(chdb_client, practice)
    rebuild_rollup(chdb_client, [practice])
    rebuild_rollup(chdb_client, [practice])
    assert months(chdb_client, practice) == before
    rebuild_rollup(chdb_client, [])  # nothing to do


def test_feed_tables_name_columns_of_their_sources(chdb_client: Client) -> None:
    for feed, (source, _) in rollup.FEEDS.items():
        feed_columns = {r[0] for r in chdb_client.query(f"DESCRIBE TABLE {feed}").result_rows}
        source_columns = {r[0] for r in chdb_client.query(f"DESCRIBE TABLE {source}").result_rows}
        assert feed_columns <= source_columns


def test_a_rebuild_cut_short_is_done_at_the_next_sync(
    chdb_client: Client, practice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sync(zone: str) -> None:
        sync_practices(
            chdb_client, Practices.from_mapping({"practices": {practice: {"timezone": zone}}})
        )

    sync("UTC")
    assert months(chdb_client, practice) == [("2026-01", 0, 1), ("2026-02", 2, 1)]

    def crash(client: Client, ids: Any) -> None:
        raise RuntimeError("killed mid-rebuild")

    monkeypatch.setattr(practices_sync, "rebuild_rollup", crash)
    with pytest.raises(RuntimeError):
        sync("America/New_York")  # the practices row is written, the rollup is not rebuilt
    monkeypatch.undo()
    sync("America/New_York")  # nothing changes in practices, but the rollup is behind
    assert months(chdb_client, practice) == [("2026-01", 1, 1), ("2026-02", 1, 1)]
    built = rollup.built_with(chdb_client)
    assert built[practice] == ("America/New_York", 730)
