"""Shared fixtures.

chDB opens one on-disk path per process and pytest runs every unit test in one process, so all
in-process chDB use goes through the single session-scoped ``chdb_client``; tests isolate their
rows by unique practice ids rather than by databases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from sinks.client import connect
from sinks.migrate import migrate


@pytest.fixture(scope="session")
def chdb_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """The process's one embedded ClickHouse, migrated."""
    path = tmp_path_factory.mktemp("chdb-session") / "chdb"
    client = connect(f"chdb://{path}")
    migrate(client)
    yield client
