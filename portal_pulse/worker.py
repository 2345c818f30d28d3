"""Runs the Faust worker in this process, optionally until the group has caught up and gone idle.

Stopping is safe at any instant (docs/delivery-guarantees.md), so shutdown is bounded: on SIGTERM
retries in progress give up, and if Faust's own shutdown still hangs (a broker that is down) the
process exits after ``shutdown_timeout_seconds`` anyway. An agent that crashes stops the worker
with a non-zero exit; a restart resumes from the committed offsets.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import faust

from portal_pulse.errors import UserError
from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.private_files import private_dir
from portal_pulse.roles import group_id
from portal_pulse.roles import topics_read as _topics_read
from portal_pulse.settings import Settings, mask_url
from streams.app import build_app
from streams.group_lag import GroupLag
from streams.records import TP
from streams.runtime import Runtime
from streams.web import web_url, withdraw_address

__all__ = ["GroupLag", "run_worker"]

logger = logging.getLogger(__name__)


def topics_read(settings: Settings, role: str = "all") -> list[str]:
    """Every topic a worker of ``role`` reads (portal_pulse.roles)."""
    return _topics_read(settings, role)


def _install_idle_exit(app: faust.App, rt: Runtime, lag: GroupLag, idle_seconds: float) -> None:
    """Stop once the group has committed every partition read and nothing moved for a while."""
    started = time.monotonic()
    state: dict[str, Any] = {"checking": False}

    feeds = rt.loop.feeds

    @app.timer(0.5)
    async def exit_when_idle() -> None:
        if state["checking"] or not rt.loop.ready or time.monotonic() - started < 2:
            return
        last = max((f.last_activity for f in feeds), default=started)
        if time.monotonic() - last < idle_seconds:
            return
        state["checking"] = True
        try:
            behind = await asyncio.get_running_loop().run_in_executor(None, lag.behind)
        except Exception as exc:  # broker unreachable: not caught up, keep working
            logger.info("exit-when-idle: cannot read the group's offsets yet: %s", exc)
            return
        finally:
            state["checking"] = False
        if behind:
            if time.monotonic() - state.get("said", 0.0) >= 15:
                state["said"] = time.monotonic()
                shown = "; ".join(
                    f"{t}:{p} {n} behind (worker: at offset {rt.loop.position(TP(t, p))})"
                    for (t, p), n in sorted(behind.items())[:6]
                )
                logger.info("idle, but the group has not committed everything yet: %s", shown)
            return
        if time.monotonic() - max((f.last_activity for f in feeds), default=started) < idle_seconds:
            return
        ingest = rt.ingest
        if ingest is not None and not ingest.settled():
            # The last watermark ("every source caught up") is not out yet: the final
            # deadlines fire only once the processors read it.
            return
        # The timers (watermark announcements, the processors' tick) could still send records
        # between this check and the stop, which nobody would read: quiet them (waiting for
        # one in flight, delivered when this returns), then look at the group once more.
        quieted = [a for a in (ingest, rt.processors) if a is not None]
        for agent in quieted:
            await agent.quiesce()
        state["checking"] = True
        try:
            settled = not await asyncio.get_running_loop().run_in_executor(None, lag.behind)
        except Exception as exc:
            logger.info("exit-when-idle: cannot read the group's offsets yet: %s", exc)
            settled = False
        finally:
            state["checking"] = False
        if not settled:
            for agent in quieted:  # something was sent just before: read it, then try again
                agent.resume()
            return
        logger.info(
            "caught up (group committed everything) and idle for %.1fs: stopping", idle_seconds
        )
        os.kill(os.getpid(), signal.SIGTERM)


class PipelineWorker(faust.Worker):
    """Faust's worker with a bounded shutdown."""

    def __init__(
        self, app: faust.App, rt: Runtime, shutdown_timeout: float, **kwargs: object
    ) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        # No terminal spinner: it writes cursor escape codes even when stdout is not a terminal.
        self.spinner = None
        self.rt = rt
        self.shutdown_timeout = shutdown_timeout
        self._watchdog: threading.Timer | None = None
        self._stopping = False

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        from portal_pulse.logs import install

        install(logger, level, self.rt.settings.log_format)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        self.rt.started_at = time.monotonic()
        settings = self.rt.settings
        web = web_url(settings) if settings.web_port >= 0 else "off"
        role = self.rt.role
        clickhouse = mask_url(settings.clickhouse_dsn) if self.rt.clickhouse else "none"
        logger.info(
            "portal-pulse worker %s starting%s: broker %s, ClickHouse %s, topics %s.*, group %s, "
            "HTTP %s (/healthz /readyz /metrics /status)",
            _version(), "" if role == "all" else f" (role {role})", self.rt.bootstrap,
            clickhouse, settings.topic_prefix, group_id(settings, role), web,
        )  # fmt: skip

    def log_summary(self) -> None:
        rt = self.rt
        ingest = rt.ingest
        stats = dict(ingest.stats) if ingest else {}
        rows = {name: sink.rows_written for name, sink in rt.sinks.items()}
        alerts = sum(int(s.value) for s in _samples(rt.metrics.alerts))
        logger.info(
            "worker stopped after %.0fs: events %s, rows written %s, alerts delivered %d, "
            "rebalances %d",
            time.monotonic() - (rt.started_at or time.monotonic()), stats, rows, alerts,
            int(sum(s.value for s in _samples(rt.metrics.rebalances))),
        )  # fmt: skip
        if rt.processors is not None:
            from portal_pulse.late_events import late_summary

            logger.info("late events: %s", "; ".join(late_summary(rt.metrics)))

    def install_signal_handlers(self) -> None:
        """mode's handlers, each preceded by a log line and the bounded-shutdown watchdog."""
        super().install_signal_handlers()
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._watchdog is None:
            logger.info("stopping on %s", sig.name)
            self._arm_watchdog()
        if not self._stopping:
            self._stopping = True
            self.add_future(self.stop())

    async def stop(self) -> None:
        # Every way of stopping (signal, crash, end of input) is bounded in time.
        self._arm_watchdog()
        await super().stop()

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            return
        self.rt.stop_io()
        self._watchdog = threading.Timer(self.shutdown_timeout, self._force_exit)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _force_exit(self) -> None:
        logger.warning(
            "shutdown did not finish within %.0fs: exiting now (nothing unacknowledged is lost; "
            "it is read again at the next start)",
            self.shutdown_timeout,
        )
        logging.shutdown()
        os._exit(1 if self.crash_reason else 0)


def run_worker(
    settings: Settings,
    bootstrap: str,
    *,
    exit_when_idle: float | None = None,
    loglevel: str = "warn",
    role: str = "all",
) -> Runtime:
    settings = with_web_port(settings)
    private_dir(settings.data_dir)
    ensure_topics(settings, bootstrap)
    app, rt = build_app(settings, bootstrap, role=role)
    tune_collector()
    lag = None
    if exit_when_idle:
        # The role's own group, on every partition the role reads.
        lag = GroupLag(
            settings, bootstrap, topics_read(settings, role), group=group_id(settings, role)
        )
        _install_idle_exit(app, rt, lag, exit_when_idle)
    worker = PipelineWorker(
        app,
        rt,
        settings.shutdown_timeout_seconds,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        if lag is not None:
            lag.close()
        withdraw_address(settings)
        worker.log_summary()
    return rt


#: Container objects allocated between two collections of the youngest generation (CPython's
#: default is 700). A worker allocates a few dozen short-lived containers per event and hardly
#: any cycles: at 700 the collector ran every ~20 events and took 5-8 % of a worker's CPU
#: (benchmarks/README.md). Cycles are still collected, a few MB of allocations later.
GC_YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Once the app is built: what exists then (modules, the app) lives as long as the process,
    so it leaves the collector's generations; young collections run less often."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def with_web_port(settings: Settings) -> Settings:
    """Settings whose web port is free: port 0 picks one; a taken port is a user's error."""
    if settings.web_port < 0:
        return settings
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise UserError(
                f"cannot serve HTTP on {settings.web_host}:{settings.web_port} ({exc.strerror}); "
                "another worker may be running there: set PORTAL_PULSE_WEB_PORT (0 picks a free "
                "port, -1 turns the endpoint off)"
            ) from None
        port = probe.getsockname()[1]
    return settings.model_copy(update={"web_port": port})


def _version() -> str:
    try:
        return importlib.metadata.version("portal-pulse")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _samples(metric: Any) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples if s.name.endswith("_total")]
