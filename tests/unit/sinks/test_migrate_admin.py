"""Migrating apart from running (issue 21): a user that may not change the schema starts
against a current one without any DDL, and is told what to run when it is not."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.errors import EXIT_UNREACHABLE
from sinks.migrate import MIGRATIONS_DIR, MigrationNotAllowed, migrate, pending

ROOT = Path(__file__).resolve().parents[3]
# A profile with readonly = 1 stands in for the runtime user: ClickHouse refuses it every DDL
# statement and every write, as it refuses the compose stack's `pulse` DDL.
READ_ONLY = {"readonly": 1}


@pytest.fixture
def read_only_on_empty(chdb_client: Client, chdb_dsn: str) -> Iterator[Client]:
    name = f"ro_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=chdb_dsn, database=name, settings=READ_ONLY)
    try:
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


def test_a_current_schema_needs_no_ddl(chdb_dsn: str, ch: Client) -> None:
    assert pending(ch) == []
    read_only = clickhouse_connect.get_client(dsn=chdb_dsn, settings=READ_ONLY)
    try:
        assert read_only.command("SELECT getSetting('readonly')") == 1
        assert migrate(read_only) == []
    finally:
        read_only.close()


def test_pending_migrations_without_rights_say_what_to_run(read_only_on_empty: Client) -> None:
    assert [v for v, _ in pending(read_only_on_empty)] == sorted(
        int(p.name[:4]) for p in MIGRATIONS_DIR.glob("*.sql")
    )
    with pytest.raises(MigrationNotAllowed) as caught:
        migrate(read_only_on_empty)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_UNREACHABLE
    assert "python -m sinks.migrate" in message and "0001_core_tables.sql" in message
    assert len(message.splitlines()) <= 2


def _run(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PORTAL_PULSE_DATA_DIR": str(tmp_path / "data"),
        "PORTAL_PULSE_CLICKHOUSE_URL": url,
    }
    return subprocess.run(
        [sys.executable, "-m", "sinks.migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_migration_command_applies_everything_once(tmp_path: Path) -> None:
    """``python -m sinks.migrate``, the compose stack's `migrate` service, in a process of its
    own (its own chDB)."""
    url = f"chdb://{tmp_path / 'chdb'}"
    count = len(list(MIGRATIONS_DIR.glob("*.sql")))
    first = _run(tmp_path, url)
    assert first.returncode == 0, first.stderr
    assert f"applied {count} migration(s)" in first.stdout
    again = _run(tmp_path, url)
    assert again.returncode == 0, again.stderr
    assert "applied 0 migration(s)" in again.stdout


def test_the_migration_command_reports_an_unreachable_server_in_one_line(tmp_path: Path) -> None:
    out = _run(tmp_path, "http://127.0.0.1:9/default")
    assert out.returncode == EXIT_UNREACHABLE
    assert out.stderr.strip().splitlines() == [
        line for line in out.stderr.strip().splitlines() if line.startswith("sinks.migrate: ")
    ]
    assert "did not answer" in out.stderr and "Traceback" not in out.stderr
