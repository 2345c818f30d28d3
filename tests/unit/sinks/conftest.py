"""One embedded chDB database for every sink test: chDB opens a single on-disk path per process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clickhouse_connect.driver.client import Client

from sinks.client import connect
from sinks.migrate import migrate


@dataclass(frozen=True)
class ChDB:
    client: Client
    dsn: str
    first_migration: list[int]  # what the very first migrate() call applied


@pytest.fixture(scope="session")
def chdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChDB]:
    dsn = f"chdb://{tmp_path_factory.mktemp('chdb')}/ch"
    client = connect(dsn)
    yield ChDB(client, dsn, migrate(client))


@pytest.fixture
def ch(chdb: ChDB) -> Client:
    return chdb.client
