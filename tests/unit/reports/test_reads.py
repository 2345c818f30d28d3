"""The read model: typed parameters (what the worker refuses before reading), and what chDB 4.4
refuses under the worker's read-only settings.

chDB 4.4 with ``readonly=1`` as a per-query setting (clickhouse-connect sends it as a ``SETTINGS``
clause), found by the tests below:

- refused: ``file()``, ``url()``, ``s3()``, ``remote()``, ``executable()``, ``mysql()``,
  ``postgresql()``, ``hdfs()``, ``azureBlobStorage()``, ``INSERT``, DDL, and a ``SETTINGS``
  clause in the statement (any setting, ``readonly=0`` included);
- ``input()`` fails anyway outside ``INSERT … SELECT``;
- NOT refused: ``INTO OUTFILE`` (chDB runs ClickHouse's local mode, where the server writes the
  file) and ``system.*`` tables. So ``readonly`` is defence in depth only; what keeps a caller's
  SQL out is that no endpoint takes SQL (``ENDPOINTS``).
- ``readonly=1`` goes with each read and with nothing else: the sinks' inserts on the same client
  keep working. (An ``INSERT`` *sent* with ``readonly=1`` would leave the chDB session read-only,
  which is why no write ever carries these settings.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.domain.records import ALERT_FIELDS, Alert
from portal_pulse.reports.dashboard import MonthNotFound, fetch_month
from portal_pulse.reports.reads import (
    ENDPOINTS,
    READ_ONLY,
    BadParameter,
    LocalReads,
    check_practice_id,
    parse_parameters,
    query_string,
)
from schemas.model import CleanEvent
from sinks.rows import ALERT_COLUMNS, EVENT_COLUMNS, alert_row, event_row

_T = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOSTILE_TEXT = [
    "P001' OR '1'='1",
    "P001; DROP TABLE events",
    "P001/*",
    "x' UNION SELECT * FROM file('/etc/passwd', 'LineAsString') --",
    "../../etc/passwd",
    "P001\n",
    "P 001",
    "",
    "a" * 65,
    "P001%27",
    "file('/etc/passwd')",
    "http://127.0.0.1:1/",
    "P\u00e9",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
@pytest.mark.parametrize(
    "endpoint, name, others",
    [
        ("alerts", "practice", []),
        ("last_seen", "practice", []),
        ("practice_zone", "practice", []),
        ("practice_month", "practice", [("month", "2026-01")]),
        ("practice_month", "month", [("practice", "P001")]),
        ("months", "first", [("practice", "P001"), ("last", "2026-01")]),
        ("months", "last", [("practice", "P001"), ("first", "2026-01")]),
        ("month_span", "practice", []),
        ("alerts", "kind", []),
        ("alerts", "prefix", []),
        ("alerts", "open", []),
        ("alerts", "withdrawn", []),
        ("practices_with_data", "limit", []),
        ("practices_with_events", "limit", []),
    ],
)
def test_every_typed_parameter_refuses_what_is_not_of_its_type(
    endpoint: str, name: str, others: list[tuple[str, str]], text: str
) -> None:
    with pytest.raises(BadParameter):
        parse_parameters(endpoint, [*others, (name, text)])


@pytest.mark.parametrize(
    "endpoint, query",
    [
        ("query", [("sql", "SELECT 1")]),
        ("alerts", [("sql", "SELECT 1")]),
        ("alerts", [("practice", "P001"), ("practice", "P002")]),
        ("practice_month", [("practice", "P001")]),
        ("practice_month", [("month", "2026-01")]),
        ("practice_month", [("practice", "P001"), ("month", "2026-13")]),
        ("practice_month", [("practice", "P001"), ("month", "2026-1")]),
        ("months", [("practice", "P001"), ("first", "2026-02"), ("last", "2026-01")]),
        ("months", [("practice", "P001"), ("first", "1900-01"), ("last", "2026-01")]),
        ("practices_with_data", [("limit", "0")]),
        ("practices_with_data", [("limit", "1001")]),
        ("practices_with_data", [("limit", "-1")]),
        ("practices_with_data", [("limit", "1e3")]),
        ("alerts", [("open", "1")]),
        ("alerts", [("kind", "sla.*")]),
        ("alerts", [("prefix", "")]),
        ("alerts", [("withdrawn", "HIDE")]),
        ("alerts", [("withdrawn", "true")]),
        ("alerts", [("withdrawn", "only"), ("withdrawn", "show")]),
        ("practice_ids", [("path", "/etc/passwd")]),
    ],
)
def test_unknown_repeated_missing_or_out_of_range_parameters_are_refused(
    endpoint: str, query: list[tuple[str, str]]
) -> None:
    with pytest.raises(BadParameter):
        parse_parameters(endpoint, query)


def test_valid_parameters_parse_to_their_types() -> None:
    assert parse_parameters(
        "alerts",
        [("practice", "P-001.a_b"), ("kind", "sla.breached"), ("prefix", "sla."), ("open", "true")],
    ) == {"practice": "P-001.a_b", "kind": "sla.breached", "kind_prefix": "sla.", "open_only": True}
    assert parse_parameters("practices_with_data", [("limit", "11")]) == {"limit": 11}
    assert parse_parameters(
        "months", [("practice", "P1"), ("first", "2025-04"), ("last", "2026-03")]
    ) == {"practice": "P1", "first": "2025-04", "last": "2026-03"}
    assert check_practice_id("a" * 64) == "a" * 64


@pytest.mark.parametrize(
    "endpoint, kwargs",
    [
        ("alerts", {}),
        ("alerts", {"practice": "P1", "kind": "enrollment.dormant", "open_only": True}),
        ("alerts", {"practice": "P1", "kind_prefix": "enrollment.", "open_only": False}),
        ("alerts", {"practice": "P1", "withdrawn": "only"}),
        ("alerts", {"withdrawn": "show", "open_only": True}),
        ("practices_with_data", {"limit": 11}),
        ("practice_month", {"practice": "P1", "month": "2026-01"}),
        ("months", {"practice": "P1", "first": "2025-02", "last": "2026-01"}),
        ("open_alerts_by_kind", {}),
    ],
)
def test_a_call_goes_over_the_wire_and_back_unchanged(endpoint: str, kwargs: dict) -> None:
    expected = {k: v for k, v in kwargs.items() if v not in (None, False)}
    assert parse_parameters(endpoint, query_string(endpoint, kwargs)) == expected


def test_the_default_withdrawn_choice_is_not_sent() -> None:
    """So a worker of the release before --withdrawn still answers a plain ``alerts``."""
    assert query_string("alerts", {"withdrawn": "hide", "practice": "P1"}) == [("practice", "P1")]
    assert query_string("alerts", {"withdrawn": "only"}) == [("withdrawn", "only")]


def test_every_endpoint_is_a_method_of_the_local_read_model() -> None:
    assert all(callable(getattr(LocalReads, name, None)) for name in ENDPOINTS)


# -- what chDB refuses under READ_ONLY ------------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[Path, Path, socket.socket]]:
    """A secret file, an empty directory and a loopback listener nobody should reach."""
    secret = tmp_path / "key"
    secret.write_text("CANARY-SECRET\n")
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        yield secret, out, listener


def _connections(listener: socket.socket) -> int:
    """Connections the listener received (queued in its backlog, accepted here)."""
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


REFUSED = [
    "SELECT * FROM file('{secret}', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:{port}/x', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:{port}/bucket/x', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1:{port}', system.one)",
    "SELECT * FROM executable('id', 'LineAsString', 'x String')",
    "SELECT * FROM input('x String')",
    "SELECT * FROM mysql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:{port}/x', 'LineAsString')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:{port}/a', 'c', 'x')",
    "SELECT 1 UNION ALL SELECT length(line) FROM file('{secret}', 'LineAsString')",
    "SELECT * FROM file('{secret}', 'LineAsString') SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_threads = 1",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_read_only_reads_refuse_files_hosts_programs_writes_and_settings(
    chdb_client: Client, canary: tuple[Path, Path, socket.socket], sql: str
) -> None:
    secret, out, listener = canary
    statement = sql.format(secret=secret, port=listener.getsockname()[1])
    with pytest.raises(DatabaseError) as refused:
        chdb_client.query(statement, settings=READ_ONLY)
    assert "CANARY-SECRET" not in str(refused.value)
    assert _connections(listener) == 0
    assert not list(out.iterdir())


def test_read_only_does_not_stop_into_outfile_so_no_sql_is_taken_at_all(
    chdb_client: Client, tmp_path: Path
) -> None:
    """The finding that makes ``readonly`` defence in depth only: chDB writes the file."""
    target = tmp_path / "written"
    chdb_client.query(f"SELECT 1 INTO OUTFILE '{target}'", settings=READ_ONLY)
    assert target.exists()


_WRITE_PROBE = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
client.command("CREATE TABLE t (x Int32) ENGINE = MergeTree ORDER BY x")
for statement in ("CREATE TABLE pwned (x Int8) ENGINE = Memory", "INSERT INTO t VALUES (1)"):
    try:
        client.query(statement, settings={"readonly": 1})
        print("allowed")
    except Exception as exc:
        print("refused" if "READONLY" in str(exc) else "failed")
try:
    client.command("INSERT INTO t VALUES (2)")
    print("writable")
except Exception:
    print("read-only")
"""


def test_writes_sent_read_only_are_refused_and_leave_chdb_read_only(tmp_path: Path) -> None:
    """In a process of its own: a refused write leaves that chDB session read-only, which is
    why READ_ONLY goes with the worker's SELECTs only, never with a write."""
    done = subprocess.run(
        [sys.executable, "-c", _WRITE_PROBE, str(tmp_path / "chdb")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == ["refused", "refused", "read-only"]


def test_read_only_reads_leave_the_clients_writes_alone(chdb_client: Client) -> None:
    p = f"ro-{uuid.uuid4().hex[:8]}"
    reads = LocalReads(chdb_client, READ_ONLY)
    assert reads.last_seen(p) is None
    with pytest.raises(DatabaseError):
        chdb_client.query("SELECT 1 SETTINGS max_threads = 1", settings=READ_ONLY)
    event = CleanEvent(uuid.uuid4().hex, "portal.login", _T, p, f"{1:032x}", {"channel": "web"})
    chdb_client.insert("events", [event_row(event)], column_names=list(EVENT_COLUMNS))
    assert reads.last_seen(p) == _T


# -- withdrawn alerts (SPEC §7.1) ------------------------------------------------------------------


def test_alerts_and_open_counts_leave_withdrawn_alerts_out_unless_asked(
    chdb_client: Client,
) -> None:
    practice = f"withdrawn-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 2, 2, 10, tzinfo=UTC)

    def alert(n: int, kind: str = "sla.at_risk") -> Alert:
        return Alert(
            f"{practice}-{n}", kind, practice, f"t-{n}", f"{n:032x}", "clinical", "nurse",
            at + timedelta(minutes=n), at, at,
        )  # fmt: skip

    standing, resolved, gone = alert(1), alert(2).resolve(at + timedelta(hours=1)), alert(3)
    gone_resolved = alert(4).resolve(at + timedelta(hours=1))
    versions = [standing, resolved, gone, gone.withdraw(at + timedelta(hours=2)), gone_resolved]
    versions.append(gone_resolved.withdraw(at + timedelta(hours=2)))
    for version in versions:  # one insert each: one block would keep only its latest rows
        chdb_client.insert("alerts", [alert_row(version)], column_names=list(ALERT_COLUMNS))
    reads = LocalReads(chdb_client, READ_ONLY)

    def ids(**kwargs: Any) -> list[str]:
        return [r["alert_id"].rsplit("-", 1)[1] for r in reads.alerts(practice=practice, **kwargs)]

    assert ids() == ids(withdrawn="hide") == ["1", "2"]
    assert ids(withdrawn="show") == ["1", "2", "3", "4"]
    assert ids(withdrawn="only") == ["3", "4"]
    assert ids(open_only=True) == ids(open_only=True, withdrawn="show") == ["1"]
    row = reads.alerts(practice=practice, withdrawn="only")[0]
    assert row["withdrawn_at"] == (at + timedelta(hours=2)).replace(tzinfo=None)  # chDB: naive UTC
    assert set(row) == set(ALERT_FIELDS)
    with pytest.raises(BadParameter):
        reads.alerts(withdrawn="all")
    before = reads.open_alerts_by_kind()
    chdb_client.insert(
        "alerts",
        [alert_row(standing.withdraw(at + timedelta(hours=3)))],
        column_names=list(ALERT_COLUMNS),
    )
    after = reads.open_alerts_by_kind()
    assert after.get("sla.at_risk", 0) == before["sla.at_risk"] - 1
    assert ids(open_only=True) == []


@pytest.mark.parametrize("practice", ["O'Brien", "P\\001", "x' OR 1 = 1 --"])
def test_practice_month_binds_the_practice_id(chdb_client: Client, practice: str) -> None:
    """The dashboard's read of the view binds values as parameters: quotes and backslashes stay
    in the string, so such an id finds no row rather than changing the query."""
    assert LocalReads(chdb_client).practice_month(practice, "2026-01") is None
    with pytest.raises(MonthNotFound):
        fetch_month(chdb_client, practice, "2026-01")
