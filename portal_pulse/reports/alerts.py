"""Alerts as users read them: exactly the SPEC §8 fields, latest version of each alert.

A withdrawn alert (SPEC §7.1: later data showed it should not have fired) is left out unless
asked for (``withdrawn="show"`` or ``"only"``); when one is listed, the table shows its
``withdrawn_at`` too (json and csv always carry the field)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.records import ALERT_FIELDS
from portal_pulse.reports.reads import ReadModel, reads_of

__all__ = [
    "ALERT_FIELDS",
    "csv_safe",
    "fetch_alerts",
    "format_alerts",
    "iso_z",
    "practice_ids",
    "to_csv",
]


def iso_z(at: datetime | None) -> str | None:
    """ISO-8601 UTC with ``Z`` (chDB hands back naive UTC datetimes)."""
    if at is None:
        return None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fetch_alerts(
    source: ReadModel | Client,
    *,
    practice: str | None = None,
    open_only: bool = False,
    kind: str | None = None,
    kind_prefix: str | None = None,
    withdrawn: str = "hide",
) -> list[dict[str, Any]]:
    """The alerts as users read them: instants as ISO-8601 UTC with ``Z``. ``open_only``:
    neither resolved nor withdrawn; ``withdrawn``: hide, show or only (``reads.WITHDRAWN``)."""
    rows = reads_of(source).alerts(
        practice=practice,
        kind=kind,
        kind_prefix=kind_prefix,
        open_only=open_only,
        withdrawn=withdrawn,
    )
    for row in rows:
        for name in _INSTANTS:
            row[name] = iso_z(row[name])
    return rows


_INSTANTS = ("due_at", "resolved_at", "withdrawn_at")


def practice_ids(source: ReadModel | Client) -> list[str]:
    """Practices the database knows: configured (``practices``) or seen in ``events``."""
    return reads_of(source).practice_ids()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one starting ``= + - @`` (or a tab or carriage
    return) gets a leading ``'``, so Excel or LibreOffice never evaluates it as a formula.
    Numbers are left alone (a negative number is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _cell(value: Any) -> str:
    """A table cell: blank for null, floats rounded to two decimals (720.43, not 720.4333…)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def to_csv(fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header, ``\n`` line ends, blanks for nulls and ``csv_safe`` cells. A cell with
    a carriage return is quoted too (Python 3.11's writer quotes only the line terminator's
    characters), so a stray CR cannot start a new row in a spreadsheet."""

    def line(cells: Iterable[Any]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(list(cells))
        return out.getvalue()[:-2] + "\n"

    body = [line(fields)]
    body += [line("" if r.get(c) is None else csv_safe(r[c]) for c in fields) for r in rows]
    return "".join(body)


def format_alerts(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(ALERT_FIELDS, rows)
    if not rows:
        return "no alerts\n"
    cols: tuple[str, ...] = (
        "kind",
        "practice_id",
        "subject_id",
        "staff_pool",
        "due_at",
        "resolved_at",
        "response_business_minutes",
    )
    if any(r.get("withdrawn_at") is not None for r in rows):
        cols += ("withdrawn_at",)
    table = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table]
    return "\n".join(lines) + "\n"
