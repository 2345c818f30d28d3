"""The worker's HTTP endpoint (Faust's own web server): probes, metrics, status, and reads.

- ``GET /healthz``: 200 while the event loop answers (liveness);
- ``GET /readyz``: 200 when state is recovered, the consumer is caught up (within
  ``PORTAL_PULSE_READY_MAX_LAG`` messages) and ClickHouse answers; 503 with the reasons otherwise;
- ``GET /metrics``: Prometheus text format (``portal_pulse.metrics``);
- ``GET /status``: the one-screen summary ``portal-pulse status`` prints;
- ``POST /query``: one read-only ``SELECT`` against the worker's ClickHouse, so ``alerts``,
  ``followups`` and ``dashboard`` work on the embedded database while the worker holds it.

The worker writes its address beside an embedded database (``<path>.worker.json``), so those
commands find it by themselves. Faust's table and router pages stay off: they would expose state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from portal_pulse.metrics import PipelineMetrics
from sinks.remote import decode_parameters, encode_rows, is_single_select
from streams.app import Runtime
from streams.health import WorkerHealth

__all__ = ["address_file", "register", "web_url", "withdraw_address"]

logger = logging.getLogger(__name__)


def address_file(dsn: str) -> Path | None:
    """Where a worker holding the embedded database ``dsn`` writes its address."""
    if not dsn.startswith("chdb://"):
        return None
    path = Path(dsn.removeprefix("chdb://"))
    return path.with_name(path.name + ".worker.json")


def register(app: faust.App, rt: Runtime, metrics: PipelineMetrics) -> WorkerHealth:
    health = WorkerHealth(app, rt, metrics)
    settings = rt.settings

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            await health.check_clickhouse()
            reasons = health.not_ready_reasons()
            body = {"ready": not reasons, "reasons": reasons}
            return self.json(body, status=200 if not reasons else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            health.collect()
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            await health.check_clickhouse()
            body = health.status()
            body["open_alerts_by_kind"] = await _open_alerts(rt)
            return self.json(body)

    @app.page("/query")
    class Query(View):
        async def post(self, request: Request) -> Response:
            try:
                spec = json.loads(await self.read_request_content(request))
                sql = str(spec["sql"])
                params = decode_parameters(dict(spec.get("parameters") or {}))
            except (ValueError, KeyError, TypeError):
                return self.json({"error": "expected JSON {sql, parameters}"}, status=400)
            if rt.clickhouse is None:
                return self.json({"error": "a process-role worker has no ClickHouse"}, status=404)
            if not is_single_select(sql):
                return self.json({"error": "only one SELECT statement is served"}, status=403)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(
                    rt.db_executor, lambda: rt.clickhouse.query(sql, parameters=params)
                )
            except Exception as exc:  # the caller shows it as one line
                return self.json({"error": f"{type(exc).__name__}: {exc}"[:500]}, status=422)
            return self.json(
                {"columns": list(result.column_names), "rows": encode_rows(result.result_rows)}
            )

    @app.timer(1.0, name="health")
    async def refresh() -> None:
        health.collect()
        lag = health.lag()
        if lag and not any(lag.values()) and not health.caught_up_logged:
            health.caught_up_logged = True
            logger.info("caught up: %d partitions, nothing behind", len(lag))
        elif any(v > settings.ready_max_lag for v in lag.values()):
            health.caught_up_logged = False

    # Only a worker that holds the database says so (the process role never opens it).
    where = address_file(settings.clickhouse_dsn) if rt.clickhouse is not None else None

    @app.task
    async def _announce() -> None:
        """Say where this worker answers (the web server is up when tasks start)."""
        if where is not None:
            where.parent.mkdir(parents=True, exist_ok=True)
            tmp = where.with_name(where.name + ".tmp")
            tmp.write_text(json.dumps({"url": web_url(settings), "pid": os.getpid()}))
            tmp.replace(where)

    return health


def withdraw_address(settings: Any) -> None:
    """Remove this process's address file (at shutdown)."""
    where = address_file(settings.clickhouse_dsn)
    try:
        if where is not None and json.loads(where.read_text()).get("pid") == os.getpid():
            where.unlink()
    except (OSError, ValueError):
        pass


def web_url(settings: Any) -> str:
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- bound everywhere: reach it on loopback
        host = "127.0.0.1"
    return f"http://{host}:{settings.web_port}"


async def _open_alerts(rt: Runtime) -> dict[str, int]:
    if rt.clickhouse is None:
        return {}
    sql = "SELECT kind, count() FROM alerts FINAL WHERE resolved_at IS NULL GROUP BY kind"
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(rt.db_executor, rt.clickhouse.query, sql)
    except Exception:
        return {}
    return {kind: int(n) for kind, n in sorted(result.result_rows)}
