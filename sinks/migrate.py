"""Versioned DDL migrations (``sinks/migrations/NNNN_name.sql``), applied once each at start-up.

On a ClickHouse server the pipeline's runtime user may not change the schema (docker/clickhouse
users.xml): a one-shot step runs ``python -m sinks.migrate`` as the migration user first, and
the worker's own ``migrate`` call then finds nothing to do and issues no DDL at all. A worker
that meets pending migrations without the rights to apply them says so in one line.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from portal_pulse.errors import EXIT_UNREACHABLE, UserError

__all__ = [
    "MIGRATIONS_DIR",
    "MigrationNotAllowed",
    "main",
    "migrate",
    "pending",
    "split_statements",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# ClickHouse's ACCESS_DENIED, and READONLY (a user whose profile forbids writes).
_NOT_ALLOWED = {497: "ACCESS_DENIED", 164: "READONLY"}


class MigrationNotAllowed(UserError):
    """Migrations are pending and this ClickHouse user may not apply them."""

    def __init__(self, names: list[str]) -> None:
        pending = names[0] if len(names) == 1 else f"{len(names)}, {names[0]} to {names[-1]}"
        super().__init__(
            f"ClickHouse schema is behind (pending: {pending}) and this user may not change it;"
            "\nrun the migration step as the migration user first: python -m sinks.migrate "
            "(docs/deployment.md)",
            EXIT_UNREACHABLE,
        )


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: ``;`` at line end separates, ``--`` comments dropped."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def _files() -> list[tuple[int, Path]]:
    files = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name {path.name} is not NNNN_name.sql")
        files.append((int(match.group(1)), path))
    return files


def pending(client: Client) -> list[tuple[int, Path]]:
    """(version, file) of every migration not yet recorded, read without any DDL, so that a
    user with SELECT on ``schema_migrations`` alone can tell whether the schema is current."""
    files = _files()
    exists = client.command(
        "SELECT count() FROM system.tables "
        "WHERE database = currentDatabase() AND name = 'schema_migrations'"
    )
    if not exists:
        return files
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    return [(version, path) for version, path in files if version not in done]


def migrate(client: Client) -> list[int]:
    """Apply every migration newer than the recorded version; returns the versions applied.

    Nothing pending means no statement but two SELECTs; pending migrations that this user may
    not apply raise ``MigrationNotAllowed``.
    """
    todo = pending(client)
    if not todo:
        return []
    try:
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version"
        )
    except DatabaseError as exc:
        if _not_allowed(exc):
            raise MigrationNotAllowed([path.name for _, path in todo]) from exc
        raise
    applied = []
    for version, path in todo:
        for statement in split_statements(path.read_text()):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.stem]], column_names=["version", "name"])
        logger.info("applied ClickHouse migration %s", path.name)
        applied.append(version)
    return applied


def _not_allowed(exc: DatabaseError) -> bool:
    code, name = getattr(exc, "code", None), getattr(exc, "name", None)
    text = str(exc)
    return (
        code in _NOT_ALLOWED
        or name in _NOT_ALLOWED.values()
        or any(f"({n})" in text or f"Code: {c}." in text for c, n in _NOT_ALLOWED.items())
    )


def main() -> int:
    """``python -m sinks.migrate``: migrate the ClickHouse the settings name, as the user they
    name (the compose stack's one-shot ``migrate`` service runs it as the migration user)."""
    from portal_pulse.settings import Settings
    from sinks.client import connect

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        password = settings.clickhouse_password
        client = connect(
            settings.clickhouse_dsn,
            user=settings.clickhouse_user,
            password=password.get_secret_value() if password else None,
            verify=settings.clickhouse_verify_tls,
        )
        applied = migrate(client)
    except UserError as exc:
        print(f"sinks.migrate: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"sinks.migrate: applied {len(applied)} migration(s)" + (f": {applied}" if applied else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
