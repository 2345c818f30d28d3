"""Alerts as users read them: exactly the SPEC §8 fields, latest version of each alert."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["ALERT_FIELDS", "fetch_alerts", "format_alerts", "iso_z"]

ALERT_FIELDS = (
    "alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym", "category", "staff_pool",
    "due_at", "resolved_at", "response_business_minutes",
)  # fmt: skip


def iso_z(at: datetime | None) -> str | None:
    """ISO-8601 UTC with ``Z`` (chDB hands back naive UTC datetimes)."""
    if at is None:
        return None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fetch_alerts(
    client: Client,
    *,
    practice: str | None = None,
    open_only: bool = False,
    kind: str | None = None,
    kind_prefix: str | None = None,
) -> list[dict[str, Any]]:
    where, params = [], {}
    if practice:
        where.append("practice_id = {practice:String}")
        params["practice"] = practice
    if kind:
        where.append("kind = {kind:String}")
        params["kind"] = kind
    if kind_prefix:
        where.append("startsWith(kind, {prefix:String})")
        params["prefix"] = kind_prefix
    if open_only:
        where.append("resolved_at IS NULL")
    sql = (
        f"SELECT {', '.join(ALERT_FIELDS)} FROM alerts FINAL"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY due_at, alert_id"
    )
    result = client.query(sql, parameters=params)
    rows = []
    for values in result.result_rows:
        row = dict(zip(ALERT_FIELDS, values, strict=True))
        row["due_at"] = iso_z(row["due_at"])
        row["resolved_at"] = iso_z(row["resolved_at"])
        rows.append(row)
    return rows


def format_alerts(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if not rows:
        return "no alerts\n"
    cols = (
        "kind",
        "practice_id",
        "subject_id",
        "staff_pool",
        "due_at",
        "resolved_at",
        "response_business_minutes",
    )
    table = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in table]
    return "\n".join(lines) + "\n"
