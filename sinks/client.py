"""One way to reach ClickHouse: ``chdb:///path`` (embedded engine) or ``http(s)://`` (a server).

The URL's scheme is what decides the transport: ``https://`` always means TLS, whatever the
port, and ``http://`` always means plain HTTP. clickhouse-connect on its own ignores the scheme
and turns TLS on only for ports 443 and 8443, so the scheme is passed through explicitly.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from portal_pulse.errors import EXIT_NO_DATA, EXIT_UNREACHABLE, EXIT_USAGE, UserError
from portal_pulse.private_files import private_dir
from portal_pulse.settings import mask_url

__all__ = [
    "ClickHouseNoTables",
    "ClickHouseUnreachable",
    "UnsupportedClickHouseURL",
    "connect",
    "mask_url",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_embedded: dict[str, Client] = {}

# The table the first migration creates: a database without it holds no Portal Pulse tables.
_MARKER_TABLE = "schema_migrations"


class UnsupportedClickHouseURL(UserError, ValueError):
    """Neither ``chdb://`` nor ``http(s)://``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class ClickHouseUnreachable(UserError):
    """The server did not answer, refused the TLS handshake or the credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


class ClickHouseNoTables(UserError):
    """A read of a database the worker or a replay has not written to yet."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"no Portal Pulse tables at {where}; run the worker or replay first", EXIT_NO_DATA
        )


def _reason(exc: BaseException, secret: str | None) -> str:
    """Why a server did not answer, in a few words, without the password."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "connection refused" in lowered:
        reason = "connection refused"
    elif "ssl" in lowered or "tls" in lowered:
        match = re.search(r"\[SSL[^\]]*\][^()'\"]*", text)
        reason = "TLS handshake failed" + (f": {match.group(0).strip()}" if match else "")
    elif "timed out" in lowered or "timeout" in lowered:
        reason = "timed out"
    elif "name or service not known" in lowered or "nodename nor servname" in lowered:
        reason = "unknown host"
    elif "authentication" in lowered or "code: 516" in lowered or " 401" in lowered:
        reason = "authentication failed"
    else:
        reason = text if len(text) <= 160 else text[:157] + "..."
    return reason.replace(secret, "***") if secret else reason


@contextmanager
def _quiet_drivers() -> Iterator[None]:
    """urllib3 and clickhouse-connect log each failed attempt; the caller reports it once."""
    names = ("urllib3", "clickhouse_connect")
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    debug = logger.isEnabledFor(logging.DEBUG)
    for log in loggers:
        if not debug:
            log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def connect(
    dsn: str,
    *,
    user: str | None = None,
    password: str | None = None,
    verify: bool = True,
    create: bool = True,
) -> Client:
    """A client for ``dsn``; embedded clients are shared, since chDB opens one path per process.

    With ``create=False`` (readers: alerts, follow-ups, dashboards) nothing is created: a chDB
    path that does not exist yet, or a database without the pipeline's tables, raises
    ``ClickHouseNoTables``.
    """
    if dsn.startswith("chdb:"):
        path = dsn.removeprefix("chdb://")
        if path.startswith("/"):
            directory = Path(path)
            if not create and (not directory.is_dir() or not any(directory.iterdir())):
                raise ClickHouseNoTables(path)
            if create:
                private_dir(directory)  # the store is PHI: 0700, whoever made it before
        with _lock:
            client = _embedded.get(dsn)
            if client is None:
                client = clickhouse_connect.get_client(dsn=dsn)
                _embedded[dsn] = client
        if not create:
            _require_tables(client, path)
        return client
    try:
        parsed = urlparse(dsn)
        url_password = parsed.password
    except ValueError:
        raise UnsupportedClickHouseURL(
            "unsupported ClickHouse URL: use chdb:///path or http(s)://user@host:port/db"
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UnsupportedClickHouseURL(
            f"unsupported ClickHouse URL {mask_url(dsn)!r}: "
            "use chdb:///path or http(s)://user@host:port/db"
        )
    secure = parsed.scheme == "https"
    kwargs: dict = {
        "dsn": dsn,
        # Explicit, so that https:// means TLS on any port and http:// never does.
        "interface": parsed.scheme,
        "secure": secure,
        "verify": verify,
        "connect_timeout": 10,
    }
    if user:
        kwargs["username"] = user
    if password:
        kwargs["password"] = password
    try:
        with _quiet_drivers():
            client = clickhouse_connect.get_client(**kwargs)
    except Exception as exc:
        reason = _reason(exc, password or url_password)
        raise ClickHouseUnreachable(
            f"ClickHouse at {mask_url(dsn)} did not answer ({reason})"
        ) from exc
    if not create:
        _require_tables(client, mask_url(dsn))
    return client


def _require_tables(client: Client, where: str) -> None:
    found = client.command(  # a constant table name
        "SELECT count() FROM system.tables "  # noqa: S608
        f"WHERE database = currentDatabase() AND name = '{_MARKER_TABLE}'"
    )
    if not found:
        raise ClickHouseNoTables(where)
