"""Sink tests share the process's one embedded ClickHouse (``chdb_client`` in tests/conftest.py).

chDB opens a single on-disk path per process, so these tests never open their own; they isolate
their rows by unique ids, and a migration test that needs an empty schema uses its own database
on the same path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client


@pytest.fixture
def ch(chdb_client: Client) -> Client:
    return chdb_client


@pytest.fixture
def chdb_dsn(chdb_client: Client) -> str:
    return f"chdb://{chdb_client.path}"  # type: ignore[attr-defined]


@pytest.fixture
def empty_database(chdb_client: Client, chdb_dsn: str) -> Iterator[Client]:
    """A second client on the same chDB path whose default database is new and empty."""
    name = f"empty_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=chdb_dsn, database=name)
    try:
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")
