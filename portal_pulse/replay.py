"""Offline replay: a JSON Lines recording through the same ingest and processors, no Kafka.

Events are processed in event-time order (SPEC §7.1's tie order within an instant), the clock is pure event time,
and with ``until`` it runs on to that instant so deadlines up to it fire. Output goes to the same
ClickHouse tables the worker's sinks write, so a backfill or a recomputation looks like live data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import DictStore, Engine
from portal_pulse.ingest import Ingestor, Rejected, bounds_from
from portal_pulse.keylog import order_key
from portal_pulse.pipeline import build_machines, load_practices
from portal_pulse.progress import STEP, ProgressFactory, count_lines
from portal_pulse.pseudonym import Pseudonymizer, load_key
from portal_pulse.reports.monthly_rows import refresh_monthly_rows
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.settings import Settings
from schemas.jsonl import LineError, iter_lines
from schemas.model import CleanEvent
from schemas.serializer import get_codec
from sinks.batching import Batch, ClickHouseTableSink
from sinks.migrate import migrate
from sinks.rows import TABLES, alert_row, dead_letter_row, event_row, live_row, response_row

__all__ = ["ReplaySummary", "replay_file"]

logger = logging.getLogger(__name__)


@dataclass
class ReplaySummary:
    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    alerts: int = 0
    responses: int = 0
    clock: datetime | None = None
    reasons: dict[str, int] = field(default_factory=dict)


class _TableBuffer:
    """Rows for one table, written in batches as they fill."""

    def __init__(
        self, client: Client, table: str, columns: tuple[str, ...] | list[str], size: int
    ) -> None:
        self.sink = ClickHouseTableSink(client, table, columns)
        self.batch = Batch()
        self.size = size

    def add(self, row: list) -> None:
        self.batch.add(row)
        if len(self.batch) >= self.size:
            self.flush()

    def flush(self) -> None:
        self.sink.write(self.batch)
        self.batch = Batch()


class ClickHouseOutputs:
    def __init__(
        self, alerts: _TableBuffer, responses: _TableBuffer, summary: ReplaySummary
    ) -> None:
        self._alerts = alerts
        self._responses = responses
        self._summary = summary

    def alert(self, alert: Alert) -> None:
        self._alerts.add(alert_row(alert))
        self._summary.alerts += 1

    def response(self, fact: ResponseFact) -> None:
        self._responses.add(response_row(fact))
        self._summary.responses += 1


def replay_file(
    settings: Settings,
    path: Path,
    client: Client,
    *,
    until: datetime | None = None,
    batch_size: int = 50_000,
    progress: ProgressFactory | None = None,
) -> ReplaySummary:
    migrate(client)
    ingestor = Ingestor(
        get_codec("RawEvent"),
        Pseudonymizer(load_key(settings)),
        dedup_capacity=settings.dedup_capacity,
        bounds=bounds_from(settings.max_future_skew_seconds, settings.max_past_days),
    )
    summary = ReplaySummary()
    buffers = {
        name: _TableBuffer(client, name, spec.columns, batch_size) for name, spec in TABLES.items()
    }
    outputs = ClickHouseOutputs(buffers["alerts"], buffers["message_responses"], summary)
    practices = load_practices(settings)
    machines = build_machines(practices)
    live = LiveMetrics(
        DictStore(), lambda pid, at: practices.for_practice(pid).calendar.local_date(at)
    )
    engine = Engine(
        machines, {m.name: DictStore() for m in machines}, outputs, on_change=live.on_state_change
    )

    now = datetime.now(UTC)
    source = f"file:{Path(path).name}"
    accepted: list[tuple[datetime, int, CleanEvent]] = []
    bar = progress("reading", count_lines(Path(path))) if progress else None
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line_no, item in iter_lines(fh):
            if bar is not None and line_no % STEP == 0:
                bar.update(STEP)
            if isinstance(item, LineError):
                rejected: Rejected | CleanEvent | None = Rejected(
                    item.reason, item.detail, item.field
                )
                raw = item.raw.encode("utf-8", "surrogateescape")
            else:
                rejected = ingestor.admit(item, now)
                raw = b""
            if rejected is None:
                summary.duplicates += 1
            elif isinstance(rejected, CleanEvent):
                accepted.append((rejected.occurred_at, line_no, rejected))
            else:
                record = rejected.dead_letter(raw, source, 0, line_no, now)
                buffers["dead_letters"].add(dead_letter_row(record))
                summary.dead_letters += 1
                summary.reasons[rejected.reason] = summary.reasons.get(rejected.reason, 0) + 1

    if bar is not None:
        bar.close()
    # Event-time order; events of one instant in SPEC §7.1's fixed tie order (a message before
    # its reply, an enrollment before a login, then by event_id), as the worker applies them.
    accepted.sort(key=lambda item: order_key(item[2]))
    # Zones before rows: the monthly rollup cuts each row in its practice's zone as it arrives.
    sync_practices(client, practices, {e.practice_id for _, _, e in accepted})
    bar = progress("processing", len(accepted)) if progress else None
    for n, (_, _, event) in enumerate(accepted, start=1):
        if bar is not None and n % STEP == 0:
            bar.update(STEP)
        engine.advance(event.occurred_at)
        engine.on_event(event)
        live.apply(event)
        buffers["events"].add(event_row(event))
        summary.events += 1
    clock = accepted[-1][0] if accepted else None
    if until is not None and (clock is None or until > clock):
        clock = until
    if clock is not None:
        # Fire everything strictly before the clock, as the worker does when it reaches it.
        engine.advance(clock)
        for row in live.drain(0, clock):
            buffers["live_metrics"].add(live_row(row))
    if bar is not None:
        bar.close()
    summary.clock = clock
    for buf in buffers.values():
        buf.flush()
    replayed = {e.practice_id for _, _, e in accepted}
    sync_practices(client, practices, replayed)
    # What BI tools and the dashboard read (monthly_portal_performance) is stored: refreshed
    # for the practices replayed, exactly the computing view's rows when this returns.
    refreshed = refresh_monthly_rows(client, replayed)
    logger.info(
        "monthly rows refreshed: %d practice-months in %.2f s", refreshed.rows, refreshed.seconds
    )
    return summary
