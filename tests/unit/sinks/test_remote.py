"""Reads through a worker: values keep their types, the reports print the same bytes through
``RemoteReads`` as on the database, bad parameters and missing tokens are refused before any
read, and the worker's private files are trusted only when they are this user's and private.

The HTTP server here is the standard library's, calling the same ``answer`` and ``bearer_ok``
the worker's views call (tests/integration/test_worker_reads.py runs the worker itself).
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.reports.alerts import fetch_alerts, format_alerts, practice_ids
from portal_pulse.reports.dashboard import dashboard_command
from portal_pulse.reports.followups import followups_command
from portal_pulse.reports.practices_sync import sync_practices
from portal_pulse.reports.reads import READ_ONLY, LocalReads
from schemas.model import CleanEvent
from sinks.remote import (
    ADDRESS_FILE,
    TOKEN_FILE,
    RemoteReadError,
    RemoteReads,
    UntrustedFile,
    answer,
    bearer_ok,
    decode_rows,
    decode_value,
    encode_rows,
    encode_value,
    local_token,
    make_private_dir,
    read_address,
    read_private,
    runtime_dir,
    worker_token,
    write_private,
)
from sinks.rows import ALERT_COLUMNS, EVENT_COLUMNS, alert_row, event_row

TOKEN = "t" * 40
T0 = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)
GENERATED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_rows_round_trip_with_their_types() -> None:
    rows = [
        (
            "P001",
            datetime(2026, 1, 2, 3, 4, 5, 678000),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            date(2026, 1, 31),
            Decimal("12.50"),
            None,
            [1, 2],
            {"a": 1},
            2.5,
            0.1 + 0.2,
            2**63 + 5,
            math.inf,
        )
    ]
    assert decode_rows(json.loads(json.dumps(encode_rows(rows), allow_nan=False))) == rows


def test_nan_crosses_as_nan() -> None:
    assert math.isnan(decode_value(json.loads(json.dumps(encode_value(math.nan)))))


@pytest.mark.parametrize(
    "header, ok",
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        ("Bearer ", False),
        (TOKEN, False),
        (None, False),
        ("", False),
    ],
)
def test_the_bearer_token_must_match_exactly(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, TOKEN) is ok


@pytest.mark.parametrize(
    "name, query",
    [
        ("query", [("sql", "SELECT * FROM file('/etc/passwd', 'LineAsString')")]),
        ("alerts", [("practice", "P1' OR '1'='1")]),
        ("practice_month", [("practice", "P1"), ("month", "2026-01' --")]),
        ("months", [("practice", "P1"), ("first", "2026-01"), ("last", "x")]),
    ],
)
def test_a_bad_request_is_answered_400_before_anything_is_read(
    name: str, query: list[tuple[str, str]]
) -> None:
    """No read model at all: any read attempted would fail with 500, not 400."""
    status, body = answer(None, name, query)  # type: ignore[arg-type]
    assert status == 400 and "error" in json.loads(body)


# -- a server answering with the worker's functions ------------------------------------------------


@pytest.fixture(scope="module")
def seeded(chdb_client: Client) -> str:
    """A practice with logins in two months, follow-ups, an SLA alert and a formula-like id."""
    p = f"remote-{uuid.uuid4().hex[:8]}"
    logins = [
        CleanEvent(uuid.uuid4().hex, "portal.login", at, p, f"{n:032x}", {"channel": "web"})
        for n, at in enumerate([T0 - timedelta(days=40), T0 - timedelta(days=39), T0])
    ]
    chdb_client.insert("events", [event_row(e) for e in logins], column_names=list(EVENT_COLUMNS))
    alerts = [
        Alert(
            f"enrollment.dormant-{n}", "enrollment.dormant", p, f"{n:032x}", f"{n:032x}",
            None, "front_desk", T0 - timedelta(days=n), T0 - timedelta(days=n),
            T0 - timedelta(days=n),
        )
        for n in (1, 3, 7)
    ] + [
        Alert(
            "sla-1", "sla.breached", p, "=HYPERLINK(\"http://x\")", f"{9:032x}", "clinical",
            "nurse", T0 - timedelta(hours=5), T0 - timedelta(hours=5), T0 - timedelta(hours=5),
        )
    ]  # fmt: skip
    chdb_client.insert("alerts", [alert_row(a) for a in alerts], column_names=list(ALERT_COLUMNS))
    withdrawn = alerts[1].withdraw(T0 - timedelta(hours=1))  # later data withdrew one follow-up
    chdb_client.insert("alerts", [alert_row(withdrawn)], column_names=list(ALERT_COLUMNS))
    sync_practices(
        chdb_client, Practices.from_mapping({"practices": {p: {"timezone": "America/Chicago"}}})
    )
    return p


@pytest.fixture(scope="module")
def worker_url(chdb_client: Client) -> Iterator[str]:
    reads = LocalReads(chdb_client, READ_ONLY)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if not bearer_ok(self.headers.get("Authorization"), TOKEN):
                status, body = 401, b'{"error":"token"}'
            elif not url.path.startswith("/reads/"):
                status, body = 404, b'{"error":"no such page"}'
            else:
                name = url.path.removeprefix("/reads/").replace("-", "_")
                query = parse_qsl(url.query, keep_blank_values=True)
                status, body = answer(reads, name, query)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_read_gives_through_the_worker_what_it_gives_on_the_database(
    chdb_client: Client, worker_url: str, seeded: str
) -> None:
    local, remote = LocalReads(chdb_client), RemoteReads(worker_url, TOKEN)
    calls = [
        ("alerts", {}),
        ("alerts", {"practice": seeded, "open_only": True, "kind_prefix": "enrollment."}),
        ("alerts", {"practice": seeded, "kind": "sla.breached"}),
        ("alerts", {"practice": seeded, "withdrawn": "only"}),
        ("alerts", {"practice": seeded, "withdrawn": "show", "open_only": True}),
        ("open_alerts_by_kind", {}),
        ("practice_ids", {}),
        ("practices_with_data", {"limit": 11}),
        ("practices_with_events", {"limit": 11}),
        ("last_seen", {"practice": seeded}),
        ("last_seen", {"practice": "nobody"}),
        ("practice_zone", {"practice": seeded}),
        ("practice_month", {"practice": seeded, "month": "2025-12"}),
        ("practice_month", {"practice": seeded, "month": "2024-01"}),
        ("months", {"practice": seeded, "first": "2025-01", "last": "2026-01"}),
        ("month_span", {"practice": seeded}),
    ]
    for name, kwargs in calls:
        assert getattr(remote, name)(**kwargs) == getattr(local, name)(**kwargs), name


@pytest.mark.parametrize(
    "fmt, month",
    [("text", "2026-01"), ("json", "2025-12"), ("html", "2026-01"), ("text", "2025-11")],
)
def test_the_dashboard_prints_the_same_bytes_through_the_worker(
    chdb_client: Client, worker_url: str, seeded: str, fmt: str, month: str
) -> None:
    def run(source: object) -> str:
        try:
            return dashboard_command(source, seeded, month, fmt, generated_at=GENERATED)  # type: ignore[arg-type]
        except UserError as exc:
            return f"error {exc.exit_code}: {exc}"

    assert run(RemoteReads(worker_url, TOKEN)) == run(chdb_client)


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_alerts_and_followups_print_the_same_bytes_through_the_worker(
    chdb_client: Client, worker_url: str, seeded: str, fmt: str
) -> None:
    remote = RemoteReads(worker_url, TOKEN)
    for source in (remote, chdb_client):
        assert seeded in practice_ids(source)
    for withdrawn in ("hide", "show", "only"):
        assert format_alerts(
            fetch_alerts(remote, practice=seeded, withdrawn=withdrawn), fmt
        ) == format_alerts(fetch_alerts(chdb_client, practice=seeded, withdrawn=withdrawn), fmt)
    assert len(fetch_alerts(remote, practice=seeded, withdrawn="only")) == 1
    assert followups_command(remote, seeded, fmt) == followups_command(chdb_client, seeded, fmt)
    with pytest.raises(UserError) as remote_error:
        followups_command(remote, "nobody-here", fmt)
    with pytest.raises(UserError) as local_error:
        followups_command(chdb_client, "nobody-here", fmt)
    assert str(remote_error.value) == str(local_error.value)


def test_without_the_token_the_worker_reads_nothing(worker_url: str) -> None:
    for token in (None, "wrong-" + TOKEN):
        with pytest.raises(RemoteReadError, match="wants its token"):
            RemoteReads(worker_url, token).practice_ids()


# -- private files ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o777


def test_the_runtime_directory_sits_beside_the_embedded_database(tmp_path: Path) -> None:
    assert runtime_dir("chdb:///srv/pulse/chdb", tmp_path) == Path("/srv/pulse/chdb.worker")
    assert runtime_dir("https://ch:8443/db", tmp_path) == tmp_path.resolve() / "worker"


def test_a_worker_makes_its_token_once_privately_and_keeps_it(tmp_path: Path) -> None:
    directory = tmp_path / "chdb.worker"
    first = worker_token(None, directory)
    assert len(first) >= 32
    assert _mode(directory) == 0o700 and _mode(directory / TOKEN_FILE) == 0o600
    assert worker_token(None, directory) == first
    assert local_token(None, directory) == first
    assert worker_token("c" * 32, directory) == "c" * 32
    with pytest.raises(UserError, match="at least 32 characters"):
        worker_token("short", directory)


def test_write_private_replaces_a_planted_link_and_never_writes_through_it(tmp_path: Path) -> None:
    make_private_dir(tmp_path / "w")
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "w" / ADDRESS_FILE).symlink_to(victim)
    write_private(tmp_path / "w" / ADDRESS_FILE, '{"url": "http://127.0.0.1:1", "pid": 1}')
    assert victim.read_text() == "untouched"
    assert _mode(tmp_path / "w" / ADDRESS_FILE) == 0o600
    assert read_address(tmp_path / "w") == ("http://127.0.0.1:1", 1)
    assert not write_private(tmp_path / "w" / ADDRESS_FILE, "{}", replace=False)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [ADDRESS_FILE]


@pytest.mark.parametrize("problem", ["dir-mode", "file-mode", "file-link", "dir-link", "owner"])
def test_files_that_are_not_private_and_ours_are_not_trusted(tmp_path: Path, problem: str) -> None:
    directory = tmp_path / "chdb.worker"
    worker_token(None, directory)
    write_private(directory / ADDRESS_FILE, '{"url": "http://127.0.0.1:9", "pid": 1}')
    if problem == "dir-mode":
        directory.chmod(0o755)
    elif problem == "file-mode":
        (directory / TOKEN_FILE).chmod(0o644)
        (directory / ADDRESS_FILE).chmod(0o644)
    elif problem == "file-link":
        (directory / TOKEN_FILE).unlink()
        (directory / ADDRESS_FILE).unlink()
        planted = tmp_path / "planted"
        planted.write_text('{"url": "http://evil:1", "pid": 1}')
        planted.chmod(0o600)
        (directory / TOKEN_FILE).symlink_to(planted)
        (directory / ADDRESS_FILE).symlink_to(planted)
    elif problem == "dir-link":
        real = tmp_path / "elsewhere"
        directory.rename(real)
        directory.symlink_to(real)
    else:
        if os.getuid() != 0:
            pytest.skip("changing a file's owner needs root")
        os.chown(directory / ADDRESS_FILE, 4321, 4321)
        os.chown(directory / TOKEN_FILE, 4321, 4321)
    with pytest.raises(UntrustedFile, match="not trusting it"):
        read_address(directory)
    with pytest.raises(UntrustedFile, match="not trusting it"):
        local_token(None, directory)


def test_read_private_reads_a_private_file(tmp_path: Path) -> None:
    make_private_dir(tmp_path / "w")
    write_private(tmp_path / "w" / "f", "hello")
    assert read_private(tmp_path / "w" / "f") == "hello"
