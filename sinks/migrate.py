"""Versioned DDL migrations (``sinks/migrations/NNNN_name.sql``), applied once each at start-up."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from clickhouse_connect.driver.client import Client

__all__ = ["MIGRATIONS_DIR", "migrate", "split_statements"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: ``;`` at line end separates, ``--`` comments dropped."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def migrate(client: Client) -> list[int]:
    """Apply every migration newer than the recorded version; returns the versions applied."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name} is not NNNN_name.sql")
        version = int(match.group(1))
        if version in done:
            continue
        for statement in split_statements(path.read_text()):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.stem]], column_names=["version", "name"])
        logger.info("applied ClickHouse migration %s", path.name)
        applied.append(version)
    return applied
