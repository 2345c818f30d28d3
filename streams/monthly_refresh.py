"""The stored monthly rows' refresh, on the database thread of the process that holds ClickHouse.

Run by a timer (``PORTAL_PULSE_MONTHLY_REFRESH_SECONDS``), when the worker stops, and before the
worker answers a read (``streams.web``): what ``portal-pulse dashboard`` prints through a running
worker is the computing view's figures for every row written so far, not the last timer's.
"""

from __future__ import annotations

import asyncio
import logging

from streams.runtime import Runtime

__all__ = ["refresh_monthly_rows"]

logger = logging.getLogger(__name__)


async def refresh_monthly_rows(rt: Runtime, why: str = "", *, final: bool = False) -> None:
    """Refresh the stored monthly rows the sinks marked, on the database thread. A failure is
    logged: what was marked stays marked for the next try (at stop: the next start refreshes
    everything)."""
    monthly = rt.monthly_rows
    if monthly is None or not monthly.pending():
        return
    try:
        await asyncio.get_running_loop().run_in_executor(rt.db_executor, monthly.refresh, why)
    except Exception as exc:
        rt.metrics.monthly_refresh_errors.inc()
        logger.warning(
            "monthly rows: refresh failed%s: %s",
            " (the next start refreshes every practice)" if final else "; tried again later",
            f"{type(exc).__name__}: {exc}"[:300],
        )
