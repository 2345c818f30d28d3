"""Reads through a running worker, for the embedded database it holds.

chDB opens one path per process. While a worker holds it, ``alerts``, ``followups`` and
``dashboard`` call the read model (``portal_pulse.reports.reads``) through the worker instead:
one ``GET /reads/<name>`` per method, with typed query parameters, a bearer token, and the
answer's values tagged with their types, so the reports get the same Python values (datetimes,
dates, decimals, NaN) as from a direct connection and print the same bytes. The worker runs its
own SQL; nothing a caller sends is SQL, a path or a URL (SPEC §9).

Where a worker is and its token: a private directory beside the embedded database,
``<chdb path>.worker/`` (``<data dir>/worker/`` for a server ClickHouse), mode 0700, holding
``address.json`` (url, pid) and ``token``, both 0600 and owned by the worker's user. Files are
created under a temporary name with ``O_EXCL | O_NOFOLLOW`` and renamed into place; readers
open them with ``O_NOFOLLOW`` and trust them only if they and the directory belong to the
current user and nobody else can read or write them.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import os
import secrets
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from portal_pulse.errors import EXIT_UNREACHABLE, EXIT_USAGE, UserError
from portal_pulse.private_files import (
    UntrustedFile,
    check_private_dir,
    make_private_dir,
    read_private,
    untrusted,
    write_private,
)
from portal_pulse.reports.reads import (
    BadParameter,
    MonthSpan,
    ReadModel,
    parse_parameters,
    path_of,
    query_string,
)

__all__ = [
    "ADDRESS_FILE",
    "TOKEN_FILE",
    "RemoteReadError",
    "RemoteReads",
    "UntrustedFile",
    "WorkerUnreachable",
    "answer",
    "bearer_ok",
    "decode_rows",
    "decode_value",
    "encode_rows",
    "encode_value",
    "local_token",
    "make_private_dir",
    "read_private",
    "runtime_dir",
    "worker_for",
    "worker_token",
    "write_private",
]

ADDRESS_FILE = "address.json"
TOKEN_FILE = "token"  # noqa: S105 -- a file name, not a secret
MIN_TOKEN_LENGTH = 32


class RemoteReadError(UserError):
    """The worker answered, but not with the rows (refused the token, the parameters, or the
    read failed)."""


class WorkerUnreachable(UserError):
    """No worker answered at the address it left."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_UNREACHABLE)


# -- values with their types -----------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """``value`` as JSON-able data, its type tagged where JSON has none."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$f": repr(value)}  # 'nan', 'inf', '-inf': JSON has no spelling for them
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"$map": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
        if "$d" in value:
            return date.fromisoformat(value["$d"])
        if "$dec" in value:
            return Decimal(value["$dec"])
        if "$f" in value:
            return float(value["$f"])
        if "$map" in value:
            return {decode_value(k): decode_value(v) for k, v in value["$map"]}
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    return value


def encode_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [[encode_value(v) for v in row] for row in rows]


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(decode_value(v) for v in row) for row in rows]


def _dumps(body: Any) -> bytes:
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


# -- the worker's side -----------------------------------------------------------------------------


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def answer(reads: ReadModel, name: str, query: Sequence[tuple[str, str]]) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of ``GET /reads/<name>?<query>``: 400 before any read for a
    parameter the endpoint does not take or a value not of its type, 500 if the read fails."""
    try:
        kwargs = parse_parameters(name, query)
    except BadParameter as exc:
        return 400, _dumps({"error": str(exc)})
    try:
        value = getattr(reads, name)(**kwargs)
    except Exception as exc:  # the caller shows one line; the worker keeps running
        detail = (str(exc).strip().splitlines() or [""])[0][:300]
        return 500, _dumps({"error": f"{type(exc).__name__}: {detail}"})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return 200, _dumps({"value": encode_value(value)})


# -- private files ---------------------------------------------------------------------------------


def runtime_dir(dsn: str, data_dir: Path) -> Path:
    """The worker's private directory: beside an embedded database, else in the data dir."""
    if dsn.startswith("chdb://"):
        path = Path(dsn.removeprefix("chdb://"))
        return path.with_name(path.name + ".worker")
    return Path(data_dir).resolve() / "worker"


def worker_token(configured: str | None, directory: Path) -> str:
    """The token a worker asks for: the configured one, else the one in its private directory
    (created at the first start with 256 random bits, kept across restarts)."""
    if configured:
        if len(configured) < MIN_TOKEN_LENGTH:
            raise UserError(
                f"PORTAL_PULSE_WEB_TOKEN must be at least {MIN_TOKEN_LENGTH} characters "
                "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return configured
    make_private_dir(directory)
    path = directory / TOKEN_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n", replace=False)
    token = read_private(path).strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise untrusted(path, "holds no token")
    return token


def local_token(configured: str | None, directory: Path) -> str | None:
    """The token a command sends: the configured one, else the worker's (if it left one)."""
    if configured:
        return configured
    path = directory / TOKEN_FILE
    if not directory.exists() or not path.exists():
        return None
    check_private_dir(directory)
    return read_private(path).strip() or None


def read_address(directory: Path) -> tuple[str, int] | None:
    """(url, pid) a worker left in its private directory, None if it left none."""
    path = directory / ADDRESS_FILE
    if not directory.exists() or not path.exists():
        return None
    check_private_dir(directory)
    try:
        info = json.loads(read_private(path))
        return str(info["url"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return None


# -- the command's side ----------------------------------------------------------------------------


class RemoteReads:
    """The read model through a worker's ``/reads`` endpoints; it writes nothing."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _get(self, name: str, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.get(
                self.url + path_of(name),
                params=query_string(name, kwargs),
                headers=headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise WorkerUnreachable(f"no worker answers at {self.url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code == 401:
            raise RemoteReadError(
                f"the worker at {self.url} wants its token: set PORTAL_PULSE_WEB_TOKEN or "
                "PORTAL_PULSE_WEB_TOKEN_FILE to the worker's token",
                EXIT_USAGE,
            )
        if response.status_code != 200 or "value" not in data:
            detail = data.get("error") or response.reason_phrase
            raise RemoteReadError(
                f"the worker at {self.url} could not read {name}: {detail}", EXIT_UNREACHABLE
            )
        return decode_value(data["value"])

    def alerts(
        self,
        *,
        practice: str | None = None,
        kind: str | None = None,
        kind_prefix: str | None = None,
        open_only: bool = False,
        withdrawn: str = "hide",
    ) -> list[dict[str, Any]]:
        return list(
            self._get(
                "alerts",
                practice=practice,
                kind=kind,
                kind_prefix=kind_prefix,
                open_only=open_only,
                withdrawn=withdrawn,
            )
        )

    def open_alerts_by_kind(self) -> dict[str, int]:
        return dict(self._get("open_alerts_by_kind"))

    def practice_ids(self) -> list[str]:
        return list(self._get("practice_ids"))

    def practices_with_data(self, limit: int) -> list[str]:
        return list(self._get("practices_with_data", limit=limit))

    def practices_with_events(self, limit: int) -> list[str]:
        return list(self._get("practices_with_events", limit=limit))

    def last_seen(self, practice: str) -> datetime | None:
        value = self._get("last_seen", practice=practice)
        return value if isinstance(value, datetime) else None

    def practice_zone(self, practice: str) -> str | None:
        return self._get("practice_zone", practice=practice)

    def practice_month(self, practice: str, month: str) -> dict[str, Any] | None:
        return self._get("practice_month", practice=practice, month=month)

    def months(self, practice: str, first: str, last: str) -> list[dict[str, Any]]:
        return list(self._get("months", practice=practice, first=first, last=last))

    def month_span(self, practice: str) -> MonthSpan:
        return MonthSpan(**self._get("month_span", practice=practice))

    def ping(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_for(
    directory: Path, configured_token: str | None = None
) -> tuple[RemoteReads | None, int | None]:
    """The worker that says it holds a database: (reads, pid) if it answers, else (None, pid);
    (None, None) when no live worker left an address. ``UntrustedFile`` when its files are not
    this user's and private."""
    address = read_address(directory)
    if address is None:
        return None, None
    url, pid = address
    if not _pid_alive(pid):
        return None, None
    reads = RemoteReads(url, local_token(configured_token, directory))
    return (reads if reads.ping() else None), pid
