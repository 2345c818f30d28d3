"""What the worker knows about itself: readiness, lag, event clocks, throughput — and its metrics.

``WorkerHealth`` reads the runtime (agents' progress and counters, the consumer's positions) and
keeps the Prometheus metrics of ``portal_pulse.metrics`` current. Counters kept by the agents as
plain integers are carried into Prometheus as deltas, so the hot path stays free of metric calls.
No value here holds a patient identifier or pseudonym: labels are topics, partitions, tables,
reasons and alert kinds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from portal_pulse.metrics import PipelineMetrics
from streams.records import TP
from streams.runtime import Runtime

__all__ = ["WorkerHealth"]

logger = logging.getLogger(__name__)


class WorkerHealth:
    def __init__(self, rt: Runtime, metrics: PipelineMetrics) -> None:
        self.rt = rt
        self.loop = rt.loop
        self.metrics = metrics
        self.started = time.monotonic()
        self._carried: dict[tuple[str, str], float] = {}
        self._rates: deque[tuple[float, int]] = deque(maxlen=240)
        self._clickhouse_ok: bool | None = None
        self._clickhouse_error: str | None = None
        self._clickhouse_checked = 0.0
        self.caught_up_logged = False
        self.last_error: str | None = None

    # -- counters kept by the agents ------------------------------------------------------------

    def _carry(self, counter: Any, key: tuple[str, str], total: float) -> None:
        """Add what ``total`` grew by since the last call to the Prometheus ``counter``."""
        before = self._carried.get(key, 0.0)
        if total > before:
            counter.inc(total - before)
        self._carried[key] = max(total, before)

    def collect(self) -> None:
        """Bring every metric up to date (called by the timer and before each scrape)."""
        m = self.metrics
        ingest = self.rt.ingest
        processors = self.rt.processors
        if ingest is not None:
            for outcome, n in ingest.stats.items():
                self._carry(m.events.labels(outcome), ("events", outcome), n)
            for reason, n in ingest.reasons.items():
                self._carry(m.dead_letters.labels(reason), ("dead", reason), n)
        if processors is not None:
            for reason, n in processors.dead_letter_reasons.items():
                self._carry(m.dead_letters.labels(reason), ("dead-processors", reason), n)
            for table, store in [*processors.stores.items(), ("live", processors.live_store)]:
                m.state_keys.labels(table).set(len(store))
            now = datetime.now(UTC)
            m.event_clock_lag.clear()
            for p, state in list(processors.partitions.items()):
                at = state.clock.now()
                if at is not None:
                    m.event_clock_lag.labels(str(p)).set((now - at).total_seconds())
        if ingest is not None:
            m.state_keys.labels("dedup").set(len(ingest.rt.ingestor.dedup))
        notifier = self.rt.notifier
        if notifier is not None:
            stats = notifier.stats
            for outcome, n in (
                ("delivered", stats.delivered),
                ("failed_attempt", stats.failed_attempts),
                ("gave_up", stats.gave_up),
                ("dropped", stats.dropped),
                ("rejected", stats.rejected),
            ):
                self._carry(m.webhook_deliveries.labels(outcome), ("webhook", outcome), n)
        stats = self.rt.loop.stats
        for event, total in (
            ("paused", stats.paused),
            ("dropped_stale", stats.dropped_stale),
            ("dropped_repeat", stats.dropped_repeats),
            ("commit_error", stats.commit_errors),
            ("restored_record", stats.restored_records),
            ("standby_key", stats.warm_records),
        ):
            self._carry(m.loop_events.labels(event), ("loop", event), total)
        m.consumer_lag.clear()
        for (topic, partition), behind in self.lag().items():
            m.consumer_lag.labels(topic, str(partition)).set(behind)
        m.ready.set(1 if not self.not_ready_reasons(check_clickhouse=False) else 0)
        clean = ingest.stats.get("clean", 0) + ingest.stats.get("dead_letter", 0) if ingest else 0
        self._rates.append((time.monotonic(), clean))

    # -- positions --------------------------------------------------------------------------------

    def assigned(self) -> list[TP]:
        return sorted(self.loop.assignment)

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between what this worker processed and each assigned partition's end."""
        loop = self.loop
        out: dict[tuple[str, int], int] = {}
        for tp in self.assigned():
            high = loop.highwater(tp)
            if high is None:  # not fetched yet
                continue
            out[(tp.topic, tp.partition)] = max(0, high - loop.position(tp))
        return out

    def events_per_second(self, window: float = 60.0) -> float:
        """Raw records ingested per second over the last ``window`` seconds."""
        if len(self._rates) < 2:
            return 0.0
        now, latest = self._rates[-1]
        for at, count in self._rates:
            if now - at <= window:
                return (latest - count) / (now - at) if now > at else 0.0
        return 0.0

    # -- readiness ------------------------------------------------------------------------------

    async def check_clickhouse(self) -> None:
        """Ask ClickHouse (on the database thread) at most every 5 s."""
        if self.rt.clickhouse is None or time.monotonic() - self._clickhouse_checked < 5.0:
            return  # the process role has no ClickHouse to ask
        self._clickhouse_checked = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self.rt.db_executor, self.rt.clickhouse.query, "SELECT 1"),
                timeout=5.0,
            )
        except Exception as exc:
            self._clickhouse_ok = False
            self._clickhouse_error = f"{type(exc).__name__}: {exc}"[:200]
        else:
            self._clickhouse_ok, self._clickhouse_error = True, None

    def not_ready_reasons(self, *, check_clickhouse: bool = True) -> list[str]:
        reasons = []
        if not self.loop.ready:
            reasons.append(
                "consumer group is rebalancing, or state is being recovered from the changelog topics"
            )
        else:
            unknown = [tp for tp in self.assigned() if self.loop.highwater(tp) is None]
            if unknown:
                # Nothing fetched from them yet: how far behind they are is not known.
                reasons.append(f"{len(unknown)} partitions not fetched yet (log end unknown)")
        max_lag = self.rt.settings.ready_max_lag
        behind = {k: v for k, v in self.lag().items() if v > max_lag}
        if behind:
            worst = max(behind.items(), key=lambda kv: kv[1])
            reasons.append(
                f"{len(behind)} partitions more than {max_lag} messages behind "
                f"(worst {worst[0][0]}:{worst[0][1]}, {worst[1]} behind)"
            )
        if check_clickhouse and self._clickhouse_ok is False:
            reasons.append(f"ClickHouse does not answer: {self._clickhouse_error}")
        for name, sink in self.rt.sinks.items():
            if getattr(sink, "retrying", False):
                reasons.append(f"inserts into {name} are failing and being retried")
        return reasons

    # -- the status screen ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        self.collect()
        ingest = self.rt.ingest
        processors = self.rt.processors
        reasons = self.not_ready_reasons()
        by_topic: dict[str, int] = {}
        for (topic, _), n in self.lag().items():
            by_topic[topic] = by_topic.get(topic, 0) + n
        clocks = {}
        if processors is not None:
            now = datetime.now(UTC)
            for p, state in sorted(processors.partitions.items()):
                at = state.clock.now()
                clocks[str(p)] = {
                    "event_time": at.isoformat() if at else None,
                    "behind_seconds": round((now - at).total_seconds(), 1) if at else None,
                }
        dead: dict[str, int] = dict(ingest.reasons) if ingest else {}
        if processors is not None:
            for reason, n in processors.dead_letter_reasons.items():
                dead[reason] = dead.get(reason, 0) + n
        errors = [s.last_error for s in self.rt.sinks.values() if getattr(s, "last_error", None)]
        return {
            "ready": not reasons,
            "reasons": reasons,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "assigned_partitions": len(self.assigned()),
            "lag_by_topic": dict(sorted(by_topic.items())),
            "event_clocks": clocks,
            "events_per_second": round(self.events_per_second(), 1),
            "events": dict(ingest.stats) if ingest else {},
            "dead_letters_by_reason": dict(sorted(dead.items())),
            "last_error": self.last_error or (errors[-1] if errors else None),
        }
