"""The rollup-backed ``monthly_portal_performance`` (migration 0006) against migration 0002's
query-time definition (tests/reference_monthly.py), row for row, on simulated data made awkward
on purpose: every event stored twice (a second replay), late events, events on either side of
local midnight in a half-hour zone, a re-inserted alert version, zone and look-back changes,
and a database migrated with data already in it.

Each module fixture uses a database of its own on the session's chDB path, since the simulator
names practices P001, P002, …
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import yaml
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.replay import replay_file
from portal_pulse.reports.monthly_rows import COMPUTED, refresh_monthly_rows
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.reports.reads import LocalReads
from portal_pulse.reports.rollup import refeed_events_tail
from portal_pulse.settings import Settings
from portal_pulse.simulate import SimulationSpec, simulate_to_file
from schemas.model import CleanEvent
from sinks.batching import Batch, ClickHouseTableSink, SinkWriteError
from sinks.migrate import MIGRATIONS_DIR, migrate
from sinks.rows import (
    ALERT_COLUMNS,
    EVENT_COLUMNS,
    EVENT_SOURCE_COLUMNS,
    RESPONSE_COLUMNS,
    TABLES,
    alert_row,
    event_row,
    response_row,
)
from tests.reference_monthly import create_reference

ZONES = {
    "P001": "America/New_York",
    "P002": "Asia/Kolkata",  # UTC+05:30: local midnight at hh:30 UTC
    "P003": "Australia/Adelaide",  # UTC+09:30/+10:30, daylight saving in the southern summer
    "P004": "Europe/London",
}
LOOKBACKS = {"P002": 45}
GAP = "P900"  # January and March only: February has no row
FLOAT_NOISE = ("avg_response_business_hours", "avg_response_hours")
"""Means of Float64 columns: summation order (threads, parts) moves their last bits, in the
query-time view itself from one run to the next; everything else must be bit for bit equal."""


def practices_mapping(
    zones: dict[str, str], lookbacks: dict[str, int], default_zone: str = "America/New_York"
) -> dict[str, Any]:
    listed: dict[str, Any] = {
        pid: {"timezone": zone}
        | ({"roster_lookback_days": lookbacks[pid]} if pid in lookbacks else {})
        for pid, zone in zones.items()
    }
    return {"practices": {"default": {"timezone": default_zone}, **listed}}


def open_database(chdb_client: Client) -> tuple[Client, str]:
    name = f"rollup_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    return clickhouse_connect.get_client(dsn=f"chdb://{chdb_client.path}", database=name), name  # type: ignore[attr-defined]


def same_row(columns: Sequence[str], got: Sequence[Any], want: Sequence[Any]) -> None:
    for column, x, y in zip(columns, got, want, strict=True):
        where_ = f"{column} of {want[0]} {want[1]}"
        if column in FLOAT_NOISE and x is not None and y is not None:
            assert math.isclose(x, y, rel_tol=1e-12), where_
        else:
            assert x == y and type(x) is type(y), f"{where_}: {x!r} != {y!r}"


def same_rows(got: Any, want: Any) -> None:
    """Two query results: same columns, same practice-months, every value equal."""
    assert got.column_names == want.column_names
    assert [(r[0], r[1]) for r in got.result_rows] == [(r[0], r[1]) for r in want.result_rows]
    for x, y in zip(got.result_rows, want.result_rows, strict=True):
        same_row(got.column_names, x, y)


def compare(db: Client, where: str = "") -> int:
    """Assert the view BI tools read (the stored rows) equals the computing view, the computing
    view the reference, and the dashboard's read of one practice-month (``practice_month``,
    which ``fetch_month`` calls) the view's row; returns the number of rows compared."""
    reference = create_reference(db)
    new = db.query(f"SELECT * FROM monthly_portal_performance {where} ORDER BY practice_id, month")
    computed = db.query(f"SELECT * FROM {COMPUTED} {where} ORDER BY practice_id, month")
    old = db.query(f"SELECT * FROM {reference} {where} ORDER BY practice_id, month")
    same_rows(new, computed)
    same_rows(computed, old)
    for row in new.result_rows:
        one = LocalReads(db).practice_month(row[0], row[1])
        assert one is not None, f"no row for {row[0]} {row[1]}"
        assert list(one) == list(new.column_names)
        same_row(new.column_names, list(one.values()), row)
    return len(new.result_rows)


def exact_rows(db: Client, where: str = "") -> list[tuple[Any, ...]]:
    """The view's rows without the two Float64 means (see FLOAT_NOISE)."""
    return db.query(
        f"SELECT * EXCEPT ({', '.join(FLOAT_NOISE)}) FROM monthly_portal_performance {where} "
        "ORDER BY practice_id, month"
    ).result_rows


def clean(practice: str, patient: str, kind: str, at: datetime, **details: Any) -> list[Any]:
    return event_row(CleanEvent(f"late-{uuid.uuid4().hex}", kind, at, practice, patient, details))


def late_events(db: Client) -> list[list[Any]]:
    """Events that arrive after the rest and change earlier months."""
    rows: list[list[Any]] = []
    # An enrolment before each of a few patients' first login: months of enrolment move back,
    # and surveys answered in between now count as a portal user's.
    for practice, patient, first in db.query(
        "SELECT practice_id, patient_pseudonym, min(occurred_at) FROM events "
        "WHERE event_type = 'portal.login' GROUP BY practice_id, patient_pseudonym "
        "ORDER BY practice_id, patient_pseudonym LIMIT 12"
    ).result_rows:
        rows.append(clean(practice, patient, "portal.enrolled", first - timedelta(days=33)))
        rows.append(clean(practice, patient, "survey.response", first - timedelta(days=2), score=5))
    # An earlier first view of some results, one of them before its staff contact.
    for practice, result, patient, posted in db.query(
        "SELECT practice_id, result_id, any(patient_pseudonym), min(occurred_at) FROM events "
        "WHERE event_type = 'result.posted' GROUP BY practice_id, result_id "
        "ORDER BY practice_id, result_id LIMIT 8"
    ).result_rows:
        rows.append(
            clean(
                practice, patient, "result.viewed", posted + timedelta(minutes=1), result_id=result
            )
        )
    # A visit long before the data (the roster), a mobile login (the app) and a portal payment.
    for practice, patient in db.query(
        "SELECT practice_id, any(patient_pseudonym) FROM events GROUP BY practice_id ORDER BY practice_id"
    ).result_rows:
        rows.append(
            clean(
                practice,
                patient,
                "patient.seen",
                datetime(2025, 11, 20, 15, tzinfo=UTC),
                encounter_id="late",
            )
        )
        rows.append(
            clean(
                practice,
                patient,
                "portal.login",
                datetime(2026, 2, 10, 15, tzinfo=UTC),
                channel="mobile_app",
            )
        )
        rows.append(
            clean(
                practice,
                patient,
                "payment.made",
                datetime(2026, 2, 11, 15, tzinfo=UTC),
                payment_id="late",
                amount_cents=12_345,
                currency="USD",
                channel="portal",
            )
        )
    return rows


def kolkata_midnight_events() -> list[list[Any]]:
    """Either side of local midnight on 1 February 2026 in Kolkata: 18:30 UTC on 31 January."""
    midnight = datetime(2026, 1, 31, 18, 30, tzinfo=UTC)
    patient = f"{7:032x}"
    return [
        clean("P002", patient, "portal.login", midnight - timedelta(milliseconds=1), channel="web"),
        clean(
            "P002",
            patient,
            "message.sent",
            midnight - timedelta(milliseconds=1),
            thread_id="t",
            message_id="m1",
            category="billing",
        ),
        clean("P002", patient, "record.viewed", midnight),
        clean("P002", patient, "portal.login", midnight, channel="web"),
        clean(
            "P002",
            patient,
            "phone.call",
            midnight,
            call_id="c1",
            direction="inbound",
            reason="other",
        ),
    ]


def gap_events() -> list[list[Any]]:
    patient = f"{9:032x}"
    return [
        clean(GAP, patient, "patient.seen", datetime(2026, 1, 5, 15, tzinfo=UTC), encounter_id="e"),
        clean(GAP, patient, "portal.login", datetime(2026, 1, 6, 15, tzinfo=UTC), channel="web"),
        clean(
            GAP,
            patient,
            "phone.call",
            datetime(2026, 3, 2, 15, tzinfo=UTC),
            call_id="c",
            direction="inbound",
            reason="other",
        ),
    ]


def insert_events(db: Client, rows: list[list[Any]]) -> None:
    db.insert("events", rows, column_names=list(EVENT_COLUMNS))


def refreshed(db: Client) -> Client:
    """After rows inserted straight into the tables: the refresh a writer runs after its own."""
    refresh_monthly_rows(db)
    return db


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rollup")
    events, practices = root / "events.jsonl", root / "practices.yaml"
    spec = SimulationSpec(
        practices=4, patients=60, months=3, seed=17, timezones=tuple(ZONES.values()),
        duplicate_fraction=0.02,
    )  # fmt: skip
    simulate_to_file(spec, events)
    practices.write_text(yaml.safe_dump(practices_mapping(ZONES, LOOKBACKS)))
    return events, practices


def settings_for(practices: Path) -> Settings:
    return Settings(pseudonym_key="rollup-test-key-not-a-secret-32-bytes", practices_file=practices)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def db(chdb_client: Client, recording: tuple[Path, Path]) -> Iterator[Client]:
    """Replayed twice (every row stored twice, alerts and facts re-inserted), then late events."""
    client, name = open_database(chdb_client)
    events, practices = recording
    settings = settings_for(practices)
    first = replay_file(settings, events, client)
    second = replay_file(settings, events, client)
    assert second.events == first.events and second.alerts == first.alerts > 0
    insert_events(client, late_events(client) + kolkata_midnight_events() + gap_events())
    refreshed(client)
    try:
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def test_the_data_is_awkward(db: Client) -> None:
    kinds = {r[0] for r in db.query("SELECT DISTINCT event_type FROM events").result_rows}
    assert {"survey.response", "result.viewed", "payment.made", "app.installed"} <= kinds
    assert db.query("SELECT countIf(kind = 'sla.breached') FROM alerts FINAL").result_rows[0][0]
    zones = {r[0] for r in db.query("SELECT DISTINCT zone FROM rollup_months").result_rows}
    assert set(ZONES.values()) <= zones


def test_view_equals_the_query_time_definition(db: Client) -> None:
    assert compare(db) >= 4 * 3 + 2


def test_same_columns_and_types(db: Client) -> None:
    reference = create_reference(db)
    new = db.query("DESCRIBE TABLE monthly_portal_performance").result_rows
    old = db.query(f"DESCRIBE TABLE {reference}").result_rows
    assert [(r[0], r[1]) for r in new] == [(r[0], r[1]) for r in old]


def test_a_month_without_events_has_no_row(db: Client) -> None:
    months = db.query(
        "SELECT month FROM monthly_portal_performance WHERE practice_id = {p:String} ORDER BY month",
        parameters={"p": GAP},
    ).result_rows
    assert [m[0] for m in months] == ["2026-01", "2026-03"]
    assert LocalReads(db).practice_month(GAP, "2026-02") is None
    assert LocalReads(db).practice_month("P999", "2026-01") is None


def test_half_hour_zone_cuts_months_at_local_midnight(db: Client) -> None:
    jan, feb = (
        db.query(
            "SELECT active_users, patient_messages, inbound_calls FROM monthly_portal_performance "
            "WHERE practice_id = 'P002' AND month = {m:String}",
            parameters={"m": m},
        ).result_rows[0]
        for m in ("2026-01", "2026-02")
    )
    assert jan[0] >= 1 and jan[1] >= 1 and feb[2] >= 1
    compare(db, "WHERE practice_id = 'P002'")


def test_re_inserted_alert_versions_count_once_in_their_latest_month(db: Client) -> None:
    alert_id, due_at, version = db.query(
        "SELECT alert_id, due_at, version FROM alerts FINAL WHERE kind = 'sla.breached' "
        "AND practice_id = 'P001' ORDER BY alert_id LIMIT 1"
    ).result_rows[0]
    row = db.query(
        "SELECT * FROM alerts FINAL WHERE alert_id = {a:String}", parameters={"a": alert_id}
    )
    again = list(row.result_rows[0])
    columns = list(row.column_names)
    db.insert("alerts", [again], column_names=columns)  # the same version once more
    moved = list(again)
    moved[columns.index("due_at")] = due_at + timedelta(days=40)
    moved[columns.index("version")] = version + 1
    db.insert("alerts", [moved], column_names=columns)  # a later version, due a month later
    compare(refreshed(db))


def test_zone_and_look_back_changes(db: Client) -> None:
    """A zone moves (to a UTC+05:45 one), a look-back grows, and the default zone changes for
    practices that no file lists (one synced before, one seen only now)."""
    insert_events(
        db,
        [
            clean(
                "P950",
                f"{8:032x}",
                "portal.login",
                datetime(2026, 1, 31, 23, tzinfo=UTC),
                channel="web",
            ),
            clean(
                "P950",
                f"{8:032x}",
                "patient.seen",
                datetime(2026, 2, 1, 4, 30, tzinfo=UTC),
                encounter_id="x",
            ),
        ],
    )
    before = exact_rows(db, "WHERE practice_id NOT IN ('P950', 'P900')")
    moved = practices_mapping(
        ZONES | {"P004": "Asia/Kathmandu"}, LOOKBACKS | {"P002": 400}, "America/Los_Angeles"
    )
    try:
        assert sync_practices(db, Practices.from_mapping(moved)) >= 3
        compare(db)
        zones = db.query(
            "SELECT practice_id, groupUniqArray(zone) FROM rollup_months "
            "WHERE practice_id IN ('P004', 'P900', 'P950') GROUP BY practice_id ORDER BY practice_id"
        ).result_rows
        assert [(p, sorted(z)) for p, z in zones] == [
            ("P004", ["Asia/Kathmandu", "Europe/London"]),
            ("P900", ["America/Los_Angeles", "America/New_York"]),
            ("P950", ["America/Los_Angeles", "America/New_York"]),
        ]
        assert exact_rows(db, "WHERE practice_id = 'P001'") == [r for r in before if r[0] == "P001"]
    finally:
        sync_practices(db, Practices.from_mapping(practices_mapping(ZONES, LOOKBACKS)))
    compare(db)
    assert exact_rows(db, "WHERE practice_id NOT IN ('P950', 'P900')") == before


@pytest.mark.parametrize("applied", [5, 6, 8, 9])
def test_migrating_a_database_that_has_data(
    chdb_client: Client,
    db: Client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    applied: int,
) -> None:
    """Migrations up to ``applied``, the base tables filled (through 0006's materialized views
    if it is applied), then the rest: 0006 backfills the rollup, 0007 redefines the view, 0009
    swaps in a versioned ``message_responses`` and rebuilds the SLA rollup, 0010 stores the
    view's rows (backfilled: BI tools see the same rows without any refresh)."""
    older = tmp_path / "migrations"
    older.mkdir()
    versions = sorted(int(path.name[:4]) for path in MIGRATIONS_DIR.glob("*.sql"))
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) <= applied:
            (older / path.name).write_text(path.read_text())
    client, name = open_database(chdb_client)
    try:
        monkeypatch.setattr("sinks.migrate.MIGRATIONS_DIR", older)
        assert migrate(client) == [v for v in versions if v <= applied]
        source = db.query("SELECT currentDatabase()").result_rows[0][0]
        for table in ("practices", "local_days", "events", "message_responses", "alerts"):
            columns = [r[0] for r in client.query(f"DESCRIBE TABLE {table}").result_rows]
            values = [  # an alert's version as the sink wrote it before migration 0009
                "toUInt64(toUnixTimestamp64Milli(updated_at)) * 2 + (resolved_at IS NOT NULL)"
                if (table, column) == ("alerts", "version") and applied < 9
                else column
                for column in columns
            ]
            client.command(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM {source}.{table}"
            )
        if applied < 6:  # no rollup yet: the dashboard's read gives migration 0002's row
            row = db.query(
                "SELECT * FROM monthly_portal_performance WHERE practice_id = 'P001' "
                "ORDER BY month LIMIT 1"
            )
            one = LocalReads(client).practice_month("P001", row.result_rows[0][1])
            assert one is not None
            same_row(row.column_names, list(one.values()), row.result_rows[0])
        monkeypatch.setattr("sinks.migrate.MIGRATIONS_DIR", MIGRATIONS_DIR)
        assert migrate(client) == [v for v in versions if v > applied]
        assert compare(client) == compare(db)
        assert exact_rows(client) == exact_rows(db)
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def test_every_table_reads_with_select_star(db: Client) -> None:
    """Operators and the PHI checks dump tables with SELECT *: no column the client cannot read."""
    tables = [
        r[0]
        for r in db.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine != 'Null'"
        ).result_rows
    ]
    assert {"rollup_months", "rollup_patient_years", "rollup_sla"} <= set(tables)
    for table in tables:
        db.query(f"SELECT * FROM {table} LIMIT 3")


def test_a_session_with_join_use_nulls_reads_the_same_numbers(db: Client) -> None:
    """BI tools may run with join_use_nulls = 1: a month a part has no row for still reads 0."""
    sql = "SELECT * FROM monthly_portal_performance ORDER BY practice_id, month"
    plain = db.query(sql)
    nulls = db.query(sql, settings={"join_use_nulls": 1})
    assert nulls.result_rows == plain.result_rows


def test_a_crash_between_events_and_their_rollup_is_repaired_when_a_sink_meets_the_partition(
    chdb_client: Client, recording: tuple[Path, Path]
) -> None:
    """kill -9 after an insert's ``events`` part but before its rollup parts: the events are
    stored (so their positions say "written") but no month counts them. The next sink to read
    those positions feeds the rollup its partitions' last inserts again (the roles suite's
    sink-restart scenario lost a whole month this way)."""
    client, name = open_database(chdb_client)
    try:
        events, practices = recording
        replay_file(settings_for(practices), events, client)
        columns = (*TABLES["events"].columns, *EVENT_SOURCE_COLUMNS)
        patient = f"{7:032x}"
        rows = [
            clean(
                "P001", patient, "portal.login", datetime(2027, 6, d, 15, tzinfo=UTC), channel="web"
            )
            for d in (3, 4, 5)
        ]
        batch = Batch()
        for offset, row in enumerate(rows):
            batch.add([*row, "raw.portal|0", offset], "clean", 0, 40 + offset)

        def sink() -> ClickHouseTableSink:
            return ClickHouseTableSink(
                client, "events", columns, position_columns=True,
                on_positions=lambda t, highs: refeed_events_tail(client, t, highs, window=10),
            )  # fmt: skip

        # The crash: the rows reach events, the rollup's views never see them.
        client.command("DETACH TABLE events_rollup_feed_mv")
        try:
            assert (
                ClickHouseTableSink(client, "events", columns, position_columns=True).write(batch)
                == 3
            )
        finally:
            client.command("ATTACH TABLE events_rollup_feed_mv")
        june = f"SELECT count() FROM {COMPUTED} WHERE practice_id = 'P001' AND month = '2027-06'"
        assert client.query(june).result_rows[0][0] == 0

        # The replacement sink reads the positions back, skips the batch, and repairs the rollup.
        assert sink().write(batch) == 0
        assert client.query(june).result_rows[0][0] == 1
        compare(refreshed(client))
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def test_an_alert_inserted_again_after_a_crash_reaches_the_rollup(chdb_client: Client) -> None:
    """The alerts sink's crash between the table's part and the rollup's: its positions were
    not written, so the batch comes again with the same token; the table keeps one copy and
    the rollup's views still get the rows."""
    client, name = open_database(chdb_client)
    try:
        migrate(client)
        sync_practices(client, Practices.from_mapping(practices_mapping(ZONES, LOOKBACKS)))
        at = datetime(2026, 1, 5, 15, tzinfo=UTC)
        alert = Alert(
            "a-1", "sla.breached", "P001", "m-1", "p" * 32, "clinical", "nurses", at, at, at
        )
        batch = Batch()
        batch.add(alert_row(alert), "alerts", 0, 7)
        columns = TABLES["alerts"].columns

        def lost(_: Batch) -> None:
            raise RuntimeError("killed before the positions were written")

        client.command("DETACH TABLE alerts_rollup_feed_mv")
        try:
            with pytest.raises(SinkWriteError):
                ClickHouseTableSink(client, "alerts", columns, attempts=1, after_insert=lost).write(
                    batch
                )
        finally:
            client.command("ATTACH TABLE alerts_rollup_feed_mv")
        assert client.query("SELECT count() FROM rollup_sla").result_rows[0][0] == 0

        assert ClickHouseTableSink(client, "alerts", columns).write(batch) == 1
        assert client.query("SELECT count() FROM alerts").result_rows[0][0] == 1  # deduplicated
        assert client.query("SELECT id FROM rollup_sla FINAL").result_rows == [("a-1",)]
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def _fact(response_id: str, replied_at: datetime, minutes: float, met: bool) -> ResponseFact:
    start = replied_at - timedelta(minutes=minutes)
    return ResponseFact(
        response_id=response_id,
        practice_id="P001",
        thread_id=f"t-{response_id}",
        patient_pseudonym="p" * 32,
        category="clinical",
        routed_pool="nurse",
        replied_by_pool="nurse",
        first_message_at=start,
        clock_started_at=start,
        replied_at=replied_at,
        messages_answered=1,
        response_business_minutes=minutes,
        response_wall_minutes=minutes,
        internal_due_at=start + timedelta(hours=1),
        external_due_at=start + timedelta(hours=8),
        met_internal_target=met,
        met_external_promise=True,
    )


def test_withdrawn_facts_and_breaches_stop_counting_and_count_again_when_raised_again(
    chdb_client: Client,
) -> None:
    """SPEC §7.1: a response fact or an sla.breached alert withdrawn by late data counts in no
    monthly figure, in the view and in the dashboard's one-month query alike; a later version
    of it (raised or rewritten again) counts again; a stale copy of an earlier version,
    inserted again after a crash, changes nothing."""
    client, name = open_database(chdb_client)
    try:
        migrate(client)
        sync_practices(client, Practices.from_mapping(practices_mapping(ZONES, LOOKBACKS)))
        day = datetime(2026, 1, 12, 15, tzinfo=UTC)
        insert_events(client, [clean("P001", "p" * 32, "message.sent", day, thread_id="t")])
        fast, slow = _fact("r-fast", day, 30.0, True), _fact("r-slow", day, 90.0, False)
        breach = Alert(
            "b-1", "sla.breached", "P001", "t-b", "p" * 32, "clinical", "nurse", day, day, day
        )

        def put(*records: Alert | ResponseFact) -> None:
            for record in records:  # one insert each, as the sinks' batches would come
                if isinstance(record, Alert):
                    client.insert("alerts", [alert_row(record)], column_names=ALERT_COLUMNS)
                else:
                    client.insert(
                        "message_responses", [response_row(record)], column_names=RESPONSE_COLUMNS
                    )
            refreshed(client)

        def figures() -> tuple[Any, ...]:
            row = LocalReads(client).practice_month("P001", "2026-01")
            assert row is not None
            compare(client)  # the view and the query-time reference agree
            return (
                row["responses"],
                row["avg_response_business_hours"],
                row["within_internal_target_rate"],
                row["sla_breaches"],
            )

        put(fast, slow, breach)
        assert figures() == (2, 1.0, 0.5, 1)

        put(slow.withdraw(day + timedelta(days=2)))
        assert figures() == (1, 0.5, 1.0, 1)

        withdrawn = breach.withdraw(day + timedelta(days=2))
        put(withdrawn)
        assert figures() == (1, 0.5, 1.0, 0)

        put(breach, slow)  # stale copies of the versions withdrawn: the withdrawals stand
        assert figures() == (1, 0.5, 1.0, 0)
        standing = client.query(
            "SELECT count() FROM alerts FINAL WHERE practice_id = 'P001' AND withdrawn_at IS NULL"
        ).result_rows[0][0]
        assert standing == 0

        # Later data raises the breach again and rewrites the slow reply: both count again.
        put(dataclasses.replace(breach, updated_at=withdrawn.updated_at + timedelta(minutes=1)))
        rewritten = dataclasses.replace(
            _fact("r-slow", day, 150.0, False), updated_at=day + timedelta(days=3)
        )
        put(rewritten)
        assert figures() == (2, 1.5, 0.5, 1)

        # A month where only withdrawn facts were: no response counted, rates null, as no reply.
        feb = datetime(2026, 2, 3, 15, tzinfo=UTC)
        insert_events(client, [clean("P001", "p" * 32, "message.sent", feb, thread_id="t2")])
        gone = _fact("r-feb", feb, 10.0, True)
        put(gone, gone.withdraw(feb + timedelta(hours=1)))
        february = LocalReads(client).practice_month("P001", "2026-02")
        assert february is not None
        assert february["responses"] == 0 and february["avg_response_business_hours"] is None
        compare(client)

        # A rewrite that moves a reply into the next month moves the fact with it.
        moved = dataclasses.replace(fast, replied_at=feb, updated_at=day + timedelta(days=30))
        put(moved)
        assert figures() == (1, 2.5, 0.0, 1)
        february = LocalReads(client).practice_month("P001", "2026-02")
        assert february is not None and february["responses"] == 1
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")
