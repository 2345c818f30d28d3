"""What the agents of one worker share: settings, codecs, the consumer loop, producers, sinks.

Each agent gets the runtime (and its own delivery producer) passed in when it is built; the
runtime never imports an agent, so there is no import circle (``streams.app`` builds both).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client

from portal_pulse.ingest import Ingestor
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.reports.monthly_rows import MonthlyRows
from portal_pulse.settings import Settings
from schemas.serializer import AvroCodec
from streams.consumer_loop import ConsumerLoop

if TYPE_CHECKING:  # types only: the agents import this module, never the reverse
    from streams.ingest_agent import Ingest
    from streams.processor_agent import Processors
    from streams.sink_agents import TableSinkAgent

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    loop: ConsumerLoop
    clickhouse: Client | None  # None for the process role: it writes no ClickHouse rows
    raw_codec: AvroCodec
    clean_codec: AvroCodec
    alert_codec: AvroCodec
    dead_letter_codec: AvroCodec
    ingestor: Ingestor
    # ClickHouse calls run on one thread: off the event loop, and never two at once.
    db_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="clickhouse")
    )
    sinks: dict[str, Any] = field(default_factory=dict)
    # The stored monthly rows the sinks mark stale (None: this role writes no ClickHouse rows).
    monthly_rows: MonthlyRows | None = None
    producers: list[Any] = field(default_factory=list)
    # The role's agents, for health, status and the shutdown summary (None: not in this role).
    ingest: Ingest | None = None
    processors: Processors | None = None
    table_sinks: list[TableSinkAgent] = field(default_factory=list)
    notifier: Any = None
    bootstrap: str = ""
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    health: Any = None
    started_at: float | None = None
    role: str = "all"  # portal_pulse.roles

    def stop_io(self) -> None:
        """Make retries in progress give up (shutdown): their inputs stay uncommitted."""
        for producer in self.producers:
            producer.stop()
        for sink in self.sinks.values():
            sink.stop()

    def close(self) -> None:
        """Release the producers' connections (tests that build a runtime and never run it)."""
        for producer in self.producers:
            producer.stop()
            producer.close()
