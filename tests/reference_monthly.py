"""Migration 0002's query-time monthly view, recreated under other names as a reference.

The rollup (migration 0006) must give exactly what that definition gave (with migration 0009's
rule that withdrawn facts and alerts count nowhere), so tests and
``benchmarks/dashboard_queries.py`` build it from the migration file itself, every view renamed
with a ``reference_`` prefix, and compare the two. It is never part of the production schema.
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.client import Client

from sinks.migrate import MIGRATIONS_DIR, split_statements

__all__ = ["REFERENCE_VIEW", "create_reference", "reference_statements"]

REFERENCE_VIEW = "reference_monthly_portal_performance"

_VIEWS = (
    "events_local",
    "portal_patient_months",
    "portal_patients",
    "portal_patient_stats_months",
    "portal_result_months",
    "portal_response_months",
    "portal_breach_months",
    "monthly_portal_performance",
)
_NAME = re.compile(r"\b(" + "|".join(_VIEWS) + r")\b")


# Migration 0009 (issue 20): a withdrawn response fact or alert counts in no metric. 0002's
# views predate withdrawn_at; the reference reads the base tables' standing rows alone.
_STANDING = {
    "FROM message_responses AS mr FINAL": (
        "FROM (SELECT * FROM message_responses FINAL WHERE withdrawn_at IS NULL) AS mr"
    ),
    "FROM alerts AS al FINAL": "FROM (SELECT * FROM alerts FINAL WHERE withdrawn_at IS NULL) AS al",
}


def reference_statements() -> list[str]:
    """0002's view definitions (not its tables), each view name prefixed with ``reference_``,
    reading only facts and alerts that are not withdrawn."""
    sql = (MIGRATIONS_DIR / "0002_monthly_metrics.sql").read_text()
    views = [s for s in split_statements(sql) if s.startswith("CREATE OR REPLACE VIEW")]
    assert len(views) == len(_VIEWS), "migration 0002 changed: update tests/reference_monthly.py"
    for old, new in _STANDING.items():
        assert sum(old in v for v in views) == 1, f"migration 0002 no longer reads {old!r}"
        views = [v.replace(old, new) for v in views]
    return [_NAME.sub(lambda m: f"reference_{m.group(1)}", s) for s in views]


def create_reference(client: Client) -> str:
    """Create (or replace) the reference views; returns the monthly view's name."""
    for statement in reference_statements():
        client.command(statement)
    return REFERENCE_VIEW
