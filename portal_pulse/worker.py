"""Runs the Faust worker in this process, optionally until it has caught up and gone idle."""

from __future__ import annotations

import logging
import os
import signal
import time

import faust

from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.settings import Settings
from streams.app import Runtime, build_app

__all__ = ["run_worker"]

logger = logging.getLogger(__name__)


def _install_idle_exit(app: faust.App, rt: Runtime, idle_seconds: float) -> None:
    """Stop the worker once every assigned partition is processed and nothing moved for a while."""
    started = time.monotonic()

    @app.timer(0.5)
    async def exit_when_idle() -> None:
        if app.rebalancing or time.monotonic() - started < 5:
            return
        assignment = app.consumer.assignment()
        if not assignment:
            return
        for tp in assignment:
            readers = [p for p in rt.progress.values() if tp.topic in p.topics]
            if not all(p.caught_up(app, tp) for p in readers):
                return
        last = max((p.last_activity for p in rt.progress.values()), default=started)
        if time.monotonic() - last >= idle_seconds:
            logger.info("caught up and idle for %.1fs: stopping", idle_seconds)
            os.kill(os.getpid(), signal.SIGTERM)


def run_worker(
    settings: Settings,
    bootstrap: str,
    *,
    exit_when_idle: float | None = None,
    loglevel: str = "warn",
) -> Runtime:
    ensure_topics(settings, bootstrap)
    app, rt = build_app(settings, bootstrap)
    if exit_when_idle:
        _install_idle_exit(app, rt, exit_when_idle)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return rt
