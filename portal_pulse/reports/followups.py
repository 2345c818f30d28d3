"""Open enrollment follow-ups (SPEC §6) as the front desk works them: most overdue first.

"Overdue" is measured against the *data's* clock, not the wall clock: after a historical replay
the wall clock would make every follow-up look years late. By default ``now`` is the latest
instant the pipeline has seen for the practice, the later of its newest event ``occurred_at`` and
its newest alert ``updated_at`` (a replay run ``--until`` past its last event raises alerts after
it), falling back to the wall clock when the practice has no data. On a live pipeline whose stream
has gone idle this trails the wall clock by the idle gap; pass ``now`` to measure against another
instant.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.reports.alerts import ALERT_FIELDS, fetch_alerts, iso_z

__all__ = [
    "FOLLOWUP_FIELDS",
    "data_clock",
    "fetch_followups",
    "followups_command",
    "format_followups",
]

FOLLOWUP_FIELDS = (*ALERT_FIELDS, "days_overdue")
_TENTH_OF_A_DAY = timedelta(days=1) / 10
_TABLE_COLUMNS = ("patient_pseudonym", "due_at", "days_overdue", "staff_pool")


def _utc(at: datetime) -> datetime:
    """chDB hands back naive UTC datetimes; make them aware."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def data_clock(client: Client, practice: str) -> datetime:
    """The practice's data clock (see the module docstring), else the wall clock."""
    result = client.query(
        "SELECT (SELECT maxOrNull(occurred_at) FROM events WHERE practice_id = {p:String}),"
        " (SELECT maxOrNull(updated_at) FROM alerts WHERE practice_id = {p:String})",
        parameters={"p": practice},
    )
    seen = [_utc(v) for v in result.result_rows[0] if v is not None]
    return max(seen) if seen else datetime.now(UTC)


def _days_overdue(now: datetime, due_at: datetime) -> float:
    """Elapsed days since due, rounded down to a tenth (exact: integer division of timedeltas)."""
    return ((now - due_at) // _TENTH_OF_A_DAY) / 10


def _kind_rank(kind: str) -> tuple[int, str]:
    """SPEC §6 order (invitation → first login → app → dormancy), unknown kinds after."""
    if kind in FOLLOWUP_KINDS:
        return FOLLOWUP_KINDS.index(kind), kind
    return len(FOLLOWUP_KINDS), kind


def fetch_followups(
    client: Client, practice: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Open ``enrollment.*`` alerts of ``practice`` with ``days_overdue``, most overdue first."""
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    clock = _utc(now) if now is not None else data_clock(client, practice)
    rows = fetch_alerts(client, practice=practice, open_only=True, kind_prefix="enrollment.")
    for row in rows:
        for name, value in row.items():
            if isinstance(value, bytes):  # FixedString (patient_pseudonym) comes back as bytes
                row[name] = value.decode()
        row["days_overdue"] = _days_overdue(clock, datetime.fromisoformat(row["due_at"]))
    rows.sort(key=lambda r: (-r["days_overdue"], _kind_rank(r["kind"]), r["alert_id"]))
    return rows


def _table(rows: list[dict[str, Any]], as_of: datetime | None) -> str:
    lines = [f"open follow-ups as of {iso_z(as_of)}"] if as_of is not None else []
    if not rows:
        return "\n".join([*lines, "no open follow-ups"]) + "\n"
    table = [[("" if r[c] is None else str(r[c])) for c in _TABLE_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(_TABLE_COLUMNS)]

    def line(values: list[str] | tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    for kind in sorted({r["kind"] for r in rows}, key=_kind_rank):
        # rows come most overdue first, so each group keeps that order
        group = [t for t, r in zip(table, rows, strict=True) if r["kind"] == kind]
        if lines:
            lines.append("")
        lines += [f"{kind} ({len(group)} open)", "  " + line(_TABLE_COLUMNS)]
        lines += ["  " + line(t) for t in group]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FOLLOWUP_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in FOLLOWUP_FIELDS})
    return out.getvalue()


def format_followups(rows: list[dict[str, Any]], fmt: str, *, as_of: datetime | None = None) -> str:
    """``table`` (a section per kind), ``json`` (SPEC §8 fields + days_overdue) or ``csv``.

    ``as_of`` is shown above the table so readers know what "overdue" was measured against.
    """
    if fmt == "table":
        return _table(rows, as_of)
    if fmt == "json":
        return json.dumps([{k: r[k] for k in FOLLOWUP_FIELDS} for r in rows], indent=2) + "\n"
    if fmt == "csv":
        return _csv(rows)
    raise ValueError(f"unknown format {fmt!r}: use table, json or csv")


def followups_command(client: Client, practice: str, fmt: str, now: datetime | None = None) -> str:
    """What ``portal-pulse followups`` prints."""
    clock = _utc(now) if now is not None else data_clock(client, practice)
    return format_followups(fetch_followups(client, practice, clock), fmt, as_of=clock)
