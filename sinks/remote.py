"""Read queries through a running worker, for the embedded database it holds.

chDB opens one path per process. While a worker holds it, ``alerts``, ``followups`` and
``dashboard`` send their ``SELECT`` statements to the worker's ``POST /query`` instead; the
worker runs them on its own client and sends the rows back with their types tagged, so the
reports get the same Python values (datetimes, dates, decimals) as from a direct connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

__all__ = [
    "RemoteClient",
    "RemoteQueryError",
    "WorkerUnreachable",
    "decode_parameters",
    "decode_rows",
    "encode_parameters",
    "encode_rows",
    "worker_for",
]


class RemoteQueryError(RuntimeError):
    """The worker ran the query and ClickHouse refused it."""


class WorkerUnreachable(RuntimeError):
    """No worker answered at the address it left."""


_READ_ONLY = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)


def is_single_select(sql: str) -> bool:
    """What a worker's ``/query`` serves: one SELECT (or WITH … SELECT) statement, so that a
    read through the worker can never write. A ``;`` anywhere but at the end (comments
    included) is refused."""
    return bool(_READ_ONLY.match(sql)) and ";" not in sql.strip().rstrip(";")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"$map": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
        if "$d" in value:
            return date.fromisoformat(value["$d"])
        if "$dec" in value:
            return Decimal(value["$dec"])
        if "$map" in value:
            return {_decode(k): _decode(v) for k, v in value["$map"]}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [[_encode(v) for v in row] for row in rows]


def encode_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _encode(v) for k, v in parameters.items()}


def decode_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _decode(v) for k, v in parameters.items()}


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(_decode(v) for v in row) for row in rows]


class RemoteResult:
    """The part of clickhouse-connect's ``QueryResult`` the reports use."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.column_names = tuple(columns)
        self.result_rows = rows

    @property
    def first_row(self) -> tuple[Any, ...]:
        return self.result_rows[0]

    def named_results(self) -> list[dict[str, Any]]:
        return [dict(zip(self.column_names, row, strict=True)) for row in self.result_rows]


class RemoteClient:
    """Answers ``query`` through a worker's ``POST /query``; it writes nothing."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> RemoteResult:
        import httpx

        body = {"sql": sql, "parameters": encode_parameters(parameters or {})}
        try:
            response = httpx.post(f"{self.url}/query", json=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise WorkerUnreachable(f"no worker answers at {self.url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code != 200:
            detail = data.get("error", response.reason_phrase)
            raise RemoteQueryError(f"the worker at {self.url} refused the query: {detail}")
        return RemoteResult(data["columns"], decode_rows(data["rows"]))

    def ping(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def _pid_alive(pid: int) -> bool:
    try:
        import os

        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_for(address: Path) -> tuple[RemoteClient | None, int | None]:
    """The worker that says it holds a database: (client, pid) if it answers, else (None, pid)."""
    try:
        info = json.loads(address.read_text())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    if not _pid_alive(pid):
        return None, None
    client = RemoteClient(url)
    return (client if client.ping() else None), pid
