"""The Faust application and the runtime objects its agents share.

Agents live one per module beside this one; ``build_app`` wires them to one runtime so the
whole worker can be built from settings (tests build their own with other topic prefixes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
from clickhouse_connect.driver.client import Client
from faust.sensors import Monitor

from portal_pulse.ingest import Ingestor, bounds_from
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.pipeline import load_practices
from portal_pulse.pseudonym import Pseudonymizer, load_key
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.roles import ROLES, group_id, writes_clickhouse
from portal_pulse.settings import Settings
from schemas.serializer import AvroCodec, get_codec
from sinks.client import connect
from sinks.migrate import migrate
from streams.checkpoint import install_gated_consumer
from streams.progress import Progress
from streams.topics import PipelineTopics, declare_topics

__all__ = ["Runtime", "build_app"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    topics: PipelineTopics
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
    progress: dict[str, Progress] = field(default_factory=dict)
    sinks: dict[str, Any] = field(default_factory=dict)
    producers: list[Any] = field(default_factory=list)
    agents: dict[str, Any] = field(default_factory=dict)
    notifier: Any = None
    bootstrap: str = ""
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    health: Any = None
    started_at: float | None = None
    # Batches taken from a stream and not yet acknowledged (the stall watchdog waits for 0).
    batches_in_flight: int = 0
    role: str = "all"  # portal_pulse.roles

    def stop_io(self) -> None:
        """Make retries in progress give up (shutdown): their inputs stay unacknowledged."""
        for producer in self.producers:
            producer.stop()
        for sink in self.sinks.values():
            sink.stop()

    @contextmanager
    def batch_in_flight(self) -> Iterator[None]:
        self.batches_in_flight += 1
        try:
            yield
        finally:
            self.batches_in_flight -= 1

    def progress_of(self, agent: str, topics: Iterable[str]) -> Progress:
        return self.progress.setdefault(agent, Progress(topics))


class LeanMonitor(Monitor):
    """Faust's monitor without its per-record statistics, which nothing here reads (its web
    pages are off; ``/metrics`` is ours). It still stamps when each partition's stream last
    took a record: Faust's slow-processing check reads that."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        pass


def _cheap_producer_ebb(app: faust.App) -> None:
    """Faust's conductor awaits its producer buffer's ``wait_until_ebb`` before every record,
    and the size check behind it reads a setting through Faust's registry each time (2% of the
    worker). Nothing here produces through that buffer (outputs go through librdkafka,
    ``streams.delivery``), so the check reads the queue directly and only a buffer that really
    has a backlog goes through Faust's own wait."""
    if app.conf.producer_threaded:
        return
    buffer = app.producer.buffer
    original, limit, pending = buffer.wait_until_ebb, buffer.max_messages, buffer.pending

    async def wait_until_ebb() -> None:
        if pending.qsize() > limit:
            await original()

    buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]


def _broker_credentials(settings: Settings) -> object | None:
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=_ssl_context(settings),
        )
    if settings.kafka_security_protocol == "SSL":
        return _ssl_context(settings)
    return None


def _ssl_context(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    import ssl

    return ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )


def build_app(
    settings: Settings, bootstrap: str, *, role: str = "all"
) -> tuple[faust.App, Runtime]:
    """A worker app with the agents of ``role`` registered (portal_pulse.roles); refuses to build
    without a pseudonym key. Only ``all`` and ``sink`` connect to ClickHouse."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    pseudonym = Pseudonymizer(load_key(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = settings.schema_registry_url
    group_instance_id = settings.group_instance_id or None
    app = faust.App(
        # The app id is the consumer group: the sink role has a group of its own.
        group_id(settings, role),
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.clean_partitions,
        topic_replication_factor=1,
        # /healthz, /readyz, /metrics, /status, /reads/* (streams/web.py); Faust's own table and
        # router pages stay off: they would serve state (pseudonyms) to anyone who asks.
        # (run_worker turns port 0 into a free port; -1, or 0 left unresolved, means no endpoint.)
        web_enabled=settings.web_port > 0,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port if settings.web_port > 0 else 6066,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        producer_linger_ms=20,
        producer_max_batch_size=1_048_576,
        stream_buffer_maxsize=16_384,
        # Shut down without waiting for un-acked events (a sink batch in flight): they are
        # re-read after restart and their inserts carry the same dedup tokens.
        stream_wait_empty=False,
        broker_commit_every=10_000,
        broker_max_poll_records=5_000,
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=3600.0,
        logging_config=None,
        # Faust's local files (none with the memory store, but it creates the directory).
        datadir=str(settings.data_dir / "faust"),
        # An agent that crashes stops the worker (non-zero exit) instead of being restarted
        # without the records it had taken: a restart resumes from the committed offsets.
        agent_supervisor=mode.CrashingSupervisor,
        # A dead worker's partitions move within seconds; a restarted one with a static
        # member id takes its partitions back without a rebalance.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        consumer_group_instance_id=group_instance_id,
        table_standby_replicas=settings.standby_replicas,
        Monitor=LeanMonitor,
    )
    install_gated_consumer(app)
    _cheap_producer_ebb(app)
    client = None
    if writes_clickhouse(role):
        client = connect(
            settings.clickhouse_dsn,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value()
            if settings.clickhouse_password
            else None,
            verify=settings.clickhouse_verify_tls,
        )
        migrate(client)
        # Practice zones and look-backs are what the monthly view reads local months from.
        practices = load_practices(settings)
        sync_practices(client, practices, practices.listed_ids)
    raw_codec = get_codec("RawEvent", registry)
    runtime = Runtime(
        settings=settings,
        role=role,
        bootstrap=bootstrap,
        topics=declare_topics(app, settings),
        clickhouse=client,
        raw_codec=raw_codec,
        clean_codec=get_codec("CleanEvent", registry),
        alert_codec=get_codec("Alert", registry),
        dead_letter_codec=get_codec("DeadLetter", registry),
        ingestor=Ingestor(
            raw_codec,
            pseudonym,
            dedup_capacity=settings.dedup_capacity,
            bounds=bounds_from(settings.max_future_skew_seconds, settings.max_past_days),
        ),
    )
    from streams import ingest_agent, notify_agent, processor_agent, sink_agents
    from streams.stall import StallWatchdog

    if role in ("all", "process"):
        runtime.agents["ingest"] = ingest_agent.register(app, runtime)
        runtime.agents["processors"] = processor_agent.register(app, runtime)
    if role in ("all", "sink"):
        runtime.agents["sinks"] = sink_agents.register(app, runtime)
    if role in ("all", "process"):
        notify_agent.register(app, runtime)
    runtime.agents["stall-watchdog"] = watchdog = StallWatchdog(
        app, runtime, settings.stall_reread_seconds
    )
    watchdog.register()
    _instrument(app, runtime)
    return app, runtime


def _instrument(app: faust.App, rt: Runtime) -> None:
    """Metrics, the HTTP endpoint and the operator's log lines (docs/operations.md)."""
    from streams import web

    metrics = rt.metrics
    if rt.settings.web_port <= 0:  # no endpoint: nobody reads the metrics, keep only the logs
        _log_assignments(app, rt)
        return
    for table, sink in rt.sinks.items():
        sink.on_error = lambda _t, table=table: metrics.sink_errors.labels(table).inc()
        sink.on_written = lambda n, seconds, table=table: (
            metrics.sink_rows.labels(table).inc(n),
            metrics.sink_batch_seconds.labels(table).observe(seconds),
        )
    rt.health = web.register(app, rt, metrics)
    _log_assignments(app, rt)


def _log_assignments(app: faust.App, rt: Runtime) -> None:
    metrics = rt.metrics

    @app.on_partitions_assigned.connect
    async def _assigned(app_: faust.App, assigned: set[Any], **_: Any) -> None:
        metrics.rebalances.inc()
        ours = {t for p in rt.progress.values() for t in p.topics}
        mine = sorted((tp.topic, tp.partition) for tp in assigned if tp.topic in ours)
        by_topic: dict[str, list[int]] = {}
        for topic, partition in mine:
            by_topic.setdefault(topic, []).append(partition)
        logger.info(
            "partitions assigned (rebalance %d): %s",
            int(metrics.rebalances._value.get()),
            "; ".join(f"{t} {ps}" for t, ps in by_topic.items()) or "none",
        )
        pending["recovery"] = time.monotonic()

    pending: dict[str, float] = {}

    @app.timer(0.2, name="recovery-log")
    async def _recovered() -> None:
        began = pending.get("recovery")
        if began is None or app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        del pending["recovery"]
        logger.info(
            "state recovered in %.1fs: processing (rebalance %d)",
            time.monotonic() - began,
            int(metrics.rebalances._value.get()),
        )
