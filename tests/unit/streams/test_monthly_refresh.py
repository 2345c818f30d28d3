"""A worker that writes ClickHouse keeps the stored monthly rows (migration 0010) refreshed:
its sinks mark the practices of the rows they insert, and ``refresh_monthly_rows`` (the timer's
and the stop's call) writes them. A worker that writes no ClickHouse rows has nothing to do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.records import Alert
from portal_pulse.settings import Settings
from schemas.model import CleanEvent
from sinks.batching import Batch
from sinks.rows import TABLES, event_row
from streams.app import build_app
from streams.monthly_refresh import refresh_monthly_rows
from streams.runtime import Runtime

T = datetime(2026, 3, 5, 9, tzinfo=UTC)


def _runtime(tmp_path: Path, chdb_client: Client, role: str) -> Runtime:
    settings = Settings(
        data_dir=tmp_path / "data",
        web_port=-1,
        pseudonym_key="k" * 40,
        topic_prefix=f"monthly{uuid.uuid4().hex[:6]}",
        clickhouse_url=f"chdb://{chdb_client.path}",  # type: ignore[attr-defined]
    )
    _app, rt = build_app(settings, "127.0.0.1:9", role=role)
    return rt


@pytest.fixture
def sink_rt(tmp_path: Path, chdb_client: Client) -> Iterator[Runtime]:
    rt = _runtime(tmp_path, chdb_client, "sink")
    yield rt
    rt.close()


def test_the_sinks_mark_what_they_write_and_the_refresh_stores_it(
    sink_rt: Runtime, chdb_client: Client
) -> None:
    monthly = sink_rt.monthly_rows
    assert monthly is not None and monthly.pending()  # everything, once, at start
    asyncio.run(refresh_monthly_rows(sink_rt))
    assert not monthly.pending()
    assert sink_rt.metrics.monthly_refresh_seconds.collect()[0].samples  # observed

    practice = f"P-{uuid.uuid4().hex[:8]}"
    alert = Alert("b-1", "sla.breached", practice, "t", "p" * 32, "clinical", "nurse", T, T, T)
    batch = Batch()
    batch.add(TABLES["alerts"].row(alert), sink_rt.settings.topics.alerts, 0, 0)
    assert sink_rt.sinks["alerts"].write(batch) == 1
    assert monthly.pending()

    def breaches() -> list[tuple[str, int]]:
        return chdb_client.query(
            "SELECT month, sla_breaches FROM monthly_portal_performance "
            "WHERE practice_id = {p:String}",
            parameters={"p": practice},
        ).result_rows

    # No events for the practice: the breach has no month row to count in until one arrives.
    login = CleanEvent(f"e-{uuid.uuid4().hex}", "portal.login", T, practice, "p" * 32, {})
    batch = Batch()
    batch.add([*event_row(login), "", -1], sink_rt.settings.topics.clean, 0, 0)
    assert sink_rt.sinks["events"].write(batch) == 1
    assert breaches() == []
    asyncio.run(refresh_monthly_rows(sink_rt))
    assert breaches() == [("2026-03", 1)]
    assert not monthly.pending()


def test_a_worker_without_clickhouse_has_no_rows_to_refresh(
    tmp_path: Path, chdb_client: Client
) -> None:
    rt = _runtime(tmp_path, chdb_client, "process")
    try:
        assert rt.monthly_rows is None
        asyncio.run(refresh_monthly_rows(rt))  # nothing to do, nothing raised
    finally:
        rt.close()
