"""The stored monthly rows (migration 0010, portal_pulse/reports/monthly_rows.py) against the
computing view they copy: equal after a replay, stale after an insert only until the next
refresh of the practices a sink marked, and refreshed whole after a ``practices`` change.

Each test uses a database of its own on the session's chDB path (the simulator names practices
P001, P002, …).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.domain.practices import Practices
from portal_pulse.replay import replay_file
from portal_pulse.reports.monthly_rows import COMPUTED, ROWS, MonthlyRows, refresh_monthly_rows
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.settings import Settings
from portal_pulse.simulate import SimulationSpec, simulate_to_file
from schemas.model import CleanEvent
from sinks.batching import Batch, ClickHouseTableSink
from sinks.migrate import migrate
from sinks.rows import EVENT_COLUMNS, event_row

ZONES = {"P001": "America/New_York", "P002": "Asia/Kolkata", "P003": "Europe/London"}
FLOAT_NOISE = ("avg_response_business_hours", "avg_response_hours")
"""Float64 means: their last bits move with summation order, from one computation to the next."""


@pytest.fixture
def database(chdb_client: Client) -> Iterator[Client]:
    name = f"monthly_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_client.path}", database=name)  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    root = tmp_path_factory.mktemp("monthly-rows")
    events, practices = root / "events.jsonl", root / "practices.yaml"
    spec = SimulationSpec(
        practices=3, patients=50, months=3, seed=23, timezones=tuple(ZONES.values())
    )
    simulate_to_file(spec, events)
    listed = {pid: {"timezone": zone} for pid, zone in ZONES.items()}
    practices.write_text(yaml.safe_dump({"practices": {"default": {"timezone": "UTC"}, **listed}}))
    settings = Settings(
        pseudonym_key="monthly-rows-key-not-a-secret-32-bytes",  # type: ignore[arg-type]
        practices_file=practices,
    )
    return events, settings


def rows(db: Client, source: str, where: str = "") -> list[tuple[Any, ...]]:
    """Every row of ``source`` but the float means, and those rounded (FLOAT_NOISE)."""
    means = ", ".join(f"round({c}, 9)" for c in FLOAT_NOISE)
    return db.query(
        f"SELECT * EXCEPT ({', '.join(FLOAT_NOISE)}), {means} FROM {source} {where} "
        "ORDER BY practice_id, month"
    ).result_rows


def stored(db: Client, where: str = "") -> list[tuple[Any, ...]]:
    return rows(db, "monthly_portal_performance", where)


def computed(db: Client, where: str = "") -> list[tuple[Any, ...]]:
    return rows(db, COMPUTED, where)


def event(practice: str, patient: str, kind: str, at: datetime, **details: Any) -> list[Any]:
    return event_row(CleanEvent(f"e-{uuid.uuid4().hex}", kind, at, practice, patient, details))


def events_sink(db: Client, monthly: MonthlyRows) -> ClickHouseTableSink:
    """The events writer as the worker builds it: it marks the practices of each batch."""
    return ClickHouseTableSink(
        db, "events", EVENT_COLUMNS, before_insert=monthly.marker(EVENT_COLUMNS)
    )


def write(sink: ClickHouseTableSink, events: list[list[Any]]) -> None:
    batch = Batch()
    for row in events:
        batch.add(row)
    assert sink.write(batch) == len(events)


def test_after_a_replay_the_view_is_the_computing_view_row_for_row(
    database: Client, recording: tuple[Path, Settings]
) -> None:
    events, settings = recording
    replay_file(settings, events, database)
    got = stored(database)
    assert len(got) >= len(ZONES) * 3
    assert got == computed(database)
    described = database.query("DESCRIBE TABLE monthly_portal_performance").result_rows
    assert described == database.query(f"DESCRIBE TABLE {COMPUTED}").result_rows


def test_a_late_event_changes_its_practices_months_at_the_next_refresh(
    database: Client, recording: tuple[Path, Settings]
) -> None:
    """A result first viewed in the last month counts in the month it was posted, months
    before the event; a late enrolment moves its own month and the month the patient was
    enrolled in until then. Each time the refresh of the practice gives exactly the computing
    view's rows, and the other practices' rows are not written again."""
    events, settings = recording
    replay_file(settings, events, database)
    monthly = MonthlyRows(database)
    assert monthly.pending()  # a new process refreshes everything first (a crash may be behind)
    assert monthly.refresh() is not None and not monthly.pending()
    sink = events_sink(database, monthly)
    months = [r[1] for r in stored(database, "WHERE practice_id = 'P001'")]
    first = datetime.strptime(months[0] + "-10", "%Y-%m-%d").replace(tzinfo=UTC)
    last = datetime.strptime(months[-1] + "-20", "%Y-%m-%d").replace(tzinfo=UTC)
    patient = f"{11:032x}"
    write(sink, [event("P001", patient, "result.posted", first, result_id="late-result")])
    monthly.refresh()

    def others() -> list[tuple[Any, ...]]:
        return database.query(
            f"SELECT practice_id, max(refreshed_at) FROM {ROWS} WHERE practice_id != 'P001' "
            "GROUP BY practice_id ORDER BY practice_id"
        ).result_rows

    def refreshed_after(late: list[list[Any]]) -> set[str]:
        """Write ``late``, check the view is stale until the refresh and exact after it;
        returns P001's months that changed."""
        before, untouched = stored(database), others()
        write(sink, late)
        assert monthly.pending()
        assert stored(database) == before  # what a BI tool sees until the next refresh
        assert computed(database) != before
        result = monthly.refresh()
        assert result is not None and result.rows == len(months) and result.deleted == 0
        after = stored(database)
        assert after == computed(database)
        assert others() == untouched
        assert [r for r in after if r[0] != "P001"] == [r for r in before if r[0] != "P001"]
        return {r[1] for r, b in zip(after, before, strict=True) if r != b}

    viewed = refreshed_after(
        [event("P001", patient, "result.viewed", last, result_id="late-result")]
    )
    assert viewed == {months[0], months[-1]}  # viewed in the last month, posted in the first

    # A patient whose enrolment (an event, or implied by a first login) came after month one.
    late_starters = database.query(
        "SELECT patient_pseudonym FROM events "
        "WHERE practice_id = 'P001' AND event_type IN ('portal.enrolled', 'portal.login') "
        "GROUP BY patient_pseudonym HAVING min(occurred_at) >= {m:DateTime64(3)} "
        "ORDER BY patient_pseudonym LIMIT 1",
        parameters={"m": first + timedelta(days=25)},
    ).result_rows
    assert late_starters, "the simulated data has a patient whose portal use starts later"
    enrolled = refreshed_after([event("P001", late_starters[0][0], "portal.enrolled", first)])
    assert months[0] in enrolled and len(enrolled) >= 2


def test_a_practices_change_refreshes_every_practice_and_drops_months_that_moved(
    database: Client,
) -> None:
    """A zone change moves a practice's only event from February into January; a new default
    zone moves a practice that has no row of its own: both read their new months only."""
    migrate(database)
    own, unlisted = "P-own", "P-default"

    def sync(own_zone: str, default_zone: str) -> None:
        config = {"default": {"timezone": default_zone}, own: {"timezone": own_zone}}
        sync_practices(database, Practices.from_mapping({"practices": config}), [unlisted])

    sync("UTC", "UTC")
    monthly = MonthlyRows(database)
    at = datetime(2026, 2, 1, 3, tzinfo=UTC)  # 31 January in New York and in Los Angeles
    write(
        events_sink(database, monthly),
        [
            event(own, f"{1:032x}", "portal.login", at, channel="web"),
            event(unlisted, f"{2:032x}", "portal.login", at, channel="web"),
        ],
    )
    monthly.refresh()
    assert [r[:2] for r in stored(database)] == [(unlisted, "2026-02"), (own, "2026-02")]

    sync("America/New_York", "America/Los_Angeles")
    assert [r[:2] for r in stored(database)] == [(unlisted, "2026-01"), (own, "2026-01")]
    assert stored(database) == computed(database)
    gone = database.query(f"SELECT count() FROM {ROWS} WHERE deleted = 1").result_rows[0][0]
    assert gone == 2


def test_a_refresh_that_fails_keeps_what_it_had_to_do(database: Client) -> None:
    """The marks are put back: the next refresh, once the database answers, does them."""
    monthly = MonthlyRows(database)
    with pytest.raises(DatabaseError):
        monthly.refresh()  # not migrated yet: no computing view
    assert monthly.pending()
    migrate(database)
    assert monthly.refresh() is not None
    assert not monthly.pending() and monthly.refresh() is None


def test_a_narrower_refresh_writes_only_its_months(
    database: Client, recording: tuple[Path, Settings]
) -> None:
    events, settings = recording
    replay_file(settings, events, database)
    months = [r[1] for r in stored(database, "WHERE practice_id = 'P002'")]
    result = refresh_monthly_rows(database, ["P002"], (months[1], months[-1]))
    assert result.rows == len(months) - 1 and result.deleted == 0
    assert refresh_monthly_rows(database, []).rows == 0
    assert stored(database) == computed(database)
