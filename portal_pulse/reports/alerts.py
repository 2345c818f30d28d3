"""Alerts as users read them: exactly the SPEC §8 fields, latest version of each alert."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.records import ALERT_FIELDS

__all__ = ["ALERT_FIELDS", "fetch_alerts", "format_alerts", "iso_z", "practice_ids"]


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


def practice_ids(client: Client) -> list[str]:
    """Practices the database knows: configured (``practices``) or seen in ``events``."""
    result = client.query(
        "SELECT practice_id FROM (SELECT practice_id FROM practices WHERE practice_id != 'default' "
        "UNION DISTINCT SELECT DISTINCT practice_id FROM events) ORDER BY practice_id"
    )
    return [row[0] for row in result.result_rows]


def _cell(value: Any) -> str:
    """A table cell: blank for null, floats rounded to two decimals (720.43, not 720.4333…)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_alerts(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(ALERT_FIELDS)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in ALERT_FIELDS])
        return out.getvalue()
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
    table = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table]
    return "\n".join(lines) + "\n"
