"""``portal-pulse status``: one screen saying whether a worker is healthy and caught up."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from portal_pulse.errors import EXIT_UNREACHABLE, UserError

__all__ = ["fetch_status", "render_status", "status_token", "worker_url"]


def worker_url(explicit: str | None, directory: Path | None, default: str) -> str:
    """--worker, else the address a worker left in its private directory, else settings."""
    from sinks.remote import read_address

    if explicit:
        return explicit.rstrip("/")
    address = read_address(directory) if directory is not None else None
    return address[0] if address is not None else default


def status_token(configured: str | None, directory: Path | None, url: str) -> str | None:
    """The token to send: the configured one, else the worker's own from its private
    directory, but only to a worker on this host (loopback), never to a URL elsewhere."""
    from sinks.remote import local_token

    if configured:
        return configured
    host = urlparse(url).hostname or ""
    if directory is None or host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return local_token(None, directory)


def fetch_status(url: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url}/status", headers=headers, timeout=timeout)
        if response.status_code == 401:
            raise UserError(
                f"the worker at {url} wants its token: set PORTAL_PULSE_WEB_TOKEN or "
                "PORTAL_PULSE_WEB_TOKEN_FILE to the worker's token"
            )
        response.raise_for_status()
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise UserError(
            f"no worker answers at {url} ({type(exc).__name__}); start one with "
            "'portal-pulse worker' or pass --worker URL",
            EXIT_UNREACHABLE,
        ) from None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 120:
        return f"{value:.0f}s"
    if abs(value) < 7200:
        return f"{value / 60:.0f}min"
    if abs(value) < 172_800:
        return f"{value / 3600:.1f}h"
    return f"{value / 86400:.1f}d"


def render_status(status: dict[str, Any], url: str) -> str:
    ready = status.get("ready")
    lines = [
        f"worker {url}: {'READY' if ready else 'NOT READY'}"
        f" (up {_seconds(status.get('uptime_seconds'))}, "
        f"{status.get('assigned_partitions', 0)} partitions assigned)"
    ]
    lines += [f"  why not ready: {reason}" for reason in status.get("reasons") or []]
    lines.append(f"events/s (last minute): {status.get('events_per_second', 0):,.1f}")
    events = status.get("events") or {}
    lines.append("events since start: " + ", ".join(f"{k} {v:,}" for k, v in events.items()))
    lines.append("lag (messages behind, per topic):")
    lines += [f"  {topic:<40} {n:>10,}" for topic, n in (status.get("lag_by_topic") or {}).items()]
    lines.append("event clock per clean partition (how far behind the wall clock):")
    for partition, clock in (status.get("event_clocks") or {}).items():
        lines.append(
            f"  partition {partition:<3} {clock.get('event_time') or '-':<27} "
            f"{_seconds(clock.get('behind_seconds'))} behind"
        )
    dead = status.get("dead_letters_by_reason") or {}
    lines.append(
        "dead letters since start: " + (", ".join(f"{r} {n}" for r, n in dead.items()) or "none")
    )
    open_alerts = status.get("open_alerts_by_kind") or {}
    lines.append(
        "open alerts: " + (", ".join(f"{k} {n}" for k, n in open_alerts.items()) or "none")
    )
    lines.append(f"last error: {status.get('last_error') or 'none'}")
    return "\n".join(lines) + "\n"
