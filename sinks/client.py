"""One way to reach ClickHouse: ``chdb:///path`` (embedded engine) or ``http(s)://`` (a server)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

__all__ = ["connect"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded: dict[str, Client] = {}


def connect(
    dsn: str, *, user: str | None = None, password: str | None = None, verify: bool = True
) -> Client:
    """A client for ``dsn``; embedded clients are shared, since chDB opens one path per process."""
    if dsn.startswith("chdb:"):
        path = dsn.removeprefix("chdb://")
        if path.startswith("/"):
            Path(path).mkdir(parents=True, exist_ok=True)
        with _lock:
            client = _embedded.get(dsn)
            if client is None:
                client = clickhouse_connect.get_client(dsn=dsn)
                _embedded[dsn] = client
            return client
    parsed = urlparse(dsn)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported ClickHouse URL {dsn!r}: use chdb:///path or http(s)://host:port"
        )
    kwargs: dict = {"dsn": dsn, "verify": verify}
    if user:
        kwargs["username"] = user
    if password:
        kwargs["password"] = password
    return clickhouse_connect.get_client(**kwargs)
