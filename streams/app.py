"""The Faust application: its web server and timers, with the consumer loop and agents under it.

Faust stays the application layer (``/healthz``… pages, timers, the worker's signals and
shutdown). Kafka is read by one ``streams.consumer_loop.ConsumerLoop`` per process and written
by librdkafka producers (``streams.delivery``): Faust's own consumer, producer, conductor,
tables and sensors are not started (``PipelineBoot``, Faust's documented boot strategy).
``build_app`` wires the agents of a role to one runtime, so a whole worker is built from
settings (tests build their own with other topic prefixes).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import mode
from faust.app.base import BootStrategy

from portal_pulse.ingest import Ingestor, bounds_from
from portal_pulse.pipeline import load_practices
from portal_pulse.pseudonym import Pseudonymizer, load_key
from portal_pulse.reports.monthly_rows import MonthlyRows
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.roles import ROLES, group_id, writes_clickhouse
from portal_pulse.settings import Settings
from schemas.serializer import get_codec
from sinks.client import connect
from sinks.migrate import migrate
from streams import ingest_agent, notify_agent, processor_agent, sink_agents, web
from streams.consumer_loop import ConsumerLoop
from streams.monthly_refresh import refresh_monthly_rows
from streams.runtime import Runtime

__all__ = ["AgentRunner", "PipelineBoot", "Runtime", "build_app"]

logger = logging.getLogger(__name__)


class PipelineBoot(BootStrategy):
    """Faust without its Kafka clients and sensors: the web server, timers and services only."""

    enable_kafka = False
    enable_sensors = False


class PipelineApp(faust.App):
    BootStrategy = PipelineBoot


class AgentRunner(mode.Service):
    """Starts the consumer loop and every agent's ``run``; an agent that fails stops the worker
    (non-zero exit: a restart resumes from the committed offsets)."""

    # Bound per worker by ``runner_for`` (Faust starts a service class it is given).
    app: faust.App
    rt: Runtime
    agents: list[Any]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tasks: list[asyncio.Task[None]] = []

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        self.rt.loop.on_failure = self._failed
        for agent in self.agents:
            task = loop.create_task(self._guarded(agent), name=f"agent-{agent.name}")
            self.tasks.append(task)
        self.rt.loop.start(loop)

    def _failed(self, exc: BaseException) -> None:
        self.add_future(self.app.crash(exc))

    async def _guarded(self, agent: Any) -> None:
        try:
            await agent.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a permanent refusal: stop, nothing is committed
            logger.error("agent %s failed: %r", agent.name, exc)
            await self.app.crash(exc)

    async def on_stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.rt.loop.stop()
        for agent in self.agents:
            closing = getattr(agent, "close", None)
            if closing is not None:
                await closing()
        await refresh_monthly_rows(self.rt, "at stop", final=True)


def runner_for(app: faust.App, rt: Runtime, agents: list[Any]) -> type[AgentRunner]:
    return type("Agents", (AgentRunner,), {"app": app, "rt": rt, "agents": agents})


def build_app(
    settings: Settings, bootstrap: str, *, role: str = "all"
) -> tuple[faust.App, Runtime]:
    """A worker app with the agents of ``role`` (portal_pulse.roles); refuses to build without a
    pseudonym key. Only ``all`` and ``sink`` connect to ClickHouse."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    pseudonym = Pseudonymizer(load_key(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = settings.schema_registry_url
    group = group_id(settings, role)
    app = PipelineApp(
        group,
        broker=[f"kafka://{b}" for b in bootstrap.split(",")],
        store="memory://",
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
        logging_config=None,
        datadir=str(settings.data_dir / "faust"),
    )
    loop_config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        # A dead worker's partitions move within seconds; a restarted one with a static
        # member id takes its partitions back without a rebalance.
        "session.timeout.ms": int(settings.session_timeout_seconds * 1000),
        "heartbeat.interval.ms": int(max(1.0, settings.session_timeout_seconds / 5) * 1000),
        "fetch.max.bytes": 8 * 1024 * 1024,
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        **settings.kafka_client_config(),
    }
    if settings.group_instance_id:
        loop_config["group.instance.id"] = settings.group_instance_id
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
    rt = Runtime(
        settings=settings,
        role=role,
        bootstrap=bootstrap,
        loop=ConsumerLoop(
            loop_config, max_batch=settings.sink_batch_size, standby=settings.standby_replicas > 0
        ),
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
    rt.loop.metrics = rt.metrics
    if client is not None:
        # Starts with everything marked: a crash may have left rows unrefreshed.
        rt.monthly_rows = MonthlyRows(client, on_refreshed=rt.metrics.monthly_refreshed)

        @app.timer(settings.monthly_refresh_seconds)
        async def refresh_monthly() -> None:
            await refresh_monthly_rows(rt)

    agents: list[Any] = []
    if role in ("all", "process"):
        rt.ingest = ingest = ingest_agent.register(app, rt)
        rt.processors = processors = processor_agent.register(app, rt)
        agents += [ingest, processors]
    if role in ("all", "sink"):
        rt.table_sinks = sinks = sink_agents.register(rt)
        agents += sinks
    if role in ("all", "process"):
        notify = notify_agent.register(rt)
        if notify is not None:
            agents.append(notify)
    app.service(runner_for(app, rt, agents))
    _instrument(app, rt)
    return app, rt


def _instrument(app: faust.App, rt: Runtime) -> None:
    """Metrics, the HTTP endpoint and the operator's log lines (docs/operations.md)."""
    metrics = rt.metrics
    if rt.settings.web_port <= 0:  # no endpoint: nobody reads the metrics, keep only the logs
        return
    for table, sink in rt.sinks.items():
        sink.on_error = lambda _t, table=table: metrics.sink_errors.labels(table).inc()
        sink.on_written = lambda n, seconds, table=table: (
            metrics.sink_rows.labels(table).inc(n),
            metrics.sink_batch_seconds.labels(table).observe(seconds),
        )
    rt.health = web.register(app, rt, metrics)
