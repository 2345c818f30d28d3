"""The worker's HTTP endpoint (Faust's own web server): probes, metrics, status, and reads.

Open to anyone who can reach the port (they hold no patient data):

- ``GET /healthz``: 200 while the event loop answers (liveness);
- ``GET /readyz``: 200 when state is recovered, the consumer is caught up (within
  ``PORTAL_PULSE_READY_MAX_LAG`` messages) and ClickHouse answers; 503 with the reasons otherwise;
- ``GET /metrics``: Prometheus text format (``portal_pulse.metrics``).

With the bearer token only (``Authorization: Bearer <token>``, else 401):

- ``GET /status``: the one-screen summary ``portal-pulse status`` prints;
- ``GET /reads/<name>?…``: one method of the reports' read model
  (``portal_pulse.reports.reads``), with typed parameters, so ``alerts``, ``followups`` and
  ``dashboard`` work on the embedded database while the worker holds it. The worker runs its
  own SQL with ``readonly=1``; no endpoint takes SQL, a path or a URL, and none reads a request
  body.

The token is ``PORTAL_PULSE_WEB_TOKEN`` (or ``_FILE``); without one the worker makes one and
keeps it in its private directory (``sinks.remote.runtime_dir``: ``<chdb path>.worker/``), where
it also writes its address (``address.json``), so the commands of the same user find both.
Faust's table and router pages stay off: they would expose state.
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

from portal_pulse.errors import UserError
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.reports.reads import ENDPOINTS, READ_ONLY, LocalReads, path_of
from sinks.remote import (
    ADDRESS_FILE,
    answer,
    bearer_ok,
    make_private_dir,
    read_address,
    runtime_dir,
    worker_token,
    write_private,
)
from streams.health import WorkerHealth
from streams.monthly_refresh import refresh_monthly_rows
from streams.runtime import Runtime

__all__ = ["address_dir", "register", "web_url", "withdraw_address"]

logger = logging.getLogger(__name__)

_JSON = "application/json"


def address_dir(settings: Any) -> Path:
    """The worker's private directory for these settings (its token and address)."""
    return runtime_dir(settings.clickhouse_dsn, settings.data_dir)


def register(app: faust.App, rt: Runtime, metrics: PipelineMetrics) -> WorkerHealth:
    health = WorkerHealth(rt, metrics)
    settings = rt.settings
    directory = address_dir(settings)
    configured = settings.web_token.get_secret_value() if settings.web_token else None
    token = worker_token(configured, directory)  # a UserError stops the start, in one line
    reads = LocalReads(rt.clickhouse, READ_ONLY) if rt.clickhouse is not None else None

    def refused(view: View, request: Request) -> Response | None:
        """401 unless the request carries the token."""
        if bearer_ok(request.headers.get("Authorization"), token):
            return None
        response = view.bytes(
            b'{"error":"this endpoint needs the worker\'s bearer token"}',
            content_type=_JSON,
            status=401,
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="portal-pulse"'
        return response

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
            denied = refused(self, request)
            if denied is not None:
                return denied
            await health.check_clickhouse()
            body = health.status()
            body["open_alerts_by_kind"] = await _open_alerts(rt, reads)
            return self.json(body)

    def read_view(name: str) -> type[View]:
        class Read(View):
            async def get(self, request: Request) -> Response:
                denied = refused(self, request)
                if denied is not None:
                    return denied
                if reads is None:
                    return self.bytes(
                        b'{"error":"a process-role worker has no ClickHouse"}',
                        content_type=_JSON,
                        status=404,
                    )
                # Rows written since the last refresh are in the monthly figures it answers.
                await refresh_monthly_rows(rt)
                query = list(request.query.items())
                loop = asyncio.get_running_loop()
                status, body = await loop.run_in_executor(
                    rt.db_executor, answer, reads, name, query
                )
                return self.bytes(body, content_type=_JSON, status=status)

        Read.__name__ = Read.__qualname__ = "Read_" + name
        return Read

    for name in ENDPOINTS:
        app.page(path_of(name), name=f"reads-{name}")(read_view(name))

    @app.timer(1.0, name="health")
    async def refresh() -> None:
        health.collect()
        lag = health.lag()
        if lag and not any(lag.values()) and not health.caught_up_logged:
            health.caught_up_logged = True
            logger.info("caught up: %d partitions, nothing behind", len(lag))
        elif any(v > settings.ready_max_lag for v in lag.values()):
            health.caught_up_logged = False

    # Only a worker that holds the database says where it is (the process role never opens it).
    holds = rt.clickhouse is not None and settings.clickhouse_dsn.startswith("chdb://")
    logger.info(
        "HTTP /status and /reads need the bearer token %s",
        "PORTAL_PULSE_WEB_TOKEN(_FILE)" if configured else f"in {directory / 'token'}",
    )

    @app.task
    async def _announce() -> None:
        """Say where this worker answers (the web server is up when tasks start)."""
        if holds:
            make_private_dir(directory)
            address = {"url": web_url(settings), "pid": os.getpid()}
            write_private(directory / ADDRESS_FILE, json.dumps(address))

    return health


def withdraw_address(settings: Any) -> None:
    """Remove this process's address file (at shutdown); the token stays for the next start."""
    directory = address_dir(settings)
    try:
        address = read_address(directory)
        if address is not None and address[1] == os.getpid():
            (directory / ADDRESS_FILE).unlink()
    except (OSError, UserError):  # shutting down: a foreign or vanished file is left alone
        pass


def web_url(settings: Any) -> str:
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- bound everywhere: reach it on loopback
        host = "127.0.0.1"
    return f"http://{host}:{settings.web_port}"


async def _open_alerts(rt: Runtime, reads: LocalReads | None) -> dict[str, int]:
    if reads is None:
        return {}
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(rt.db_executor, reads.open_alerts_by_kind)
    except Exception:
        return {}
