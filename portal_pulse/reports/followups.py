"""Open enrollment follow-ups (SPEC §6) as the front desk works them: most overdue first.

"Overdue" is measured against the *data's* clock, not the wall clock: after a historical replay
the wall clock would make every follow-up look years late. By default ``now`` is the latest
instant the pipeline has seen for the practice, the later of its newest event ``occurred_at`` and
its newest alert ``updated_at`` (a replay run ``--until`` past its last event raises alerts after
it), falling back to the wall clock when the practice has no data. On a live pipeline whose stream
has gone idle this trails the wall clock by the idle gap; pass ``now`` to measure against another
instant.

Due times are shown in the practice's own time zone (``local_time.practice_timezone``).

**Re-identification at the edge.** The pipeline holds pseudonyms only. A practice that wants names
beside its follow-ups passes its own patient list (a CSV roster): each roster patient's pseudonym
is computed here with the configured key (the same ``Pseudonymizer`` ingest uses) and the roster
row is printed beside the follow-up it matches. The roster is read into memory and never written
anywhere: not to ClickHouse, not to a log, not to an error message.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.errors import EXIT_NO_DATA, UserError
from portal_pulse.reports.alerts import ALERT_FIELDS, fetch_alerts, iso_z, to_csv
from portal_pulse.reports.local_time import format_local, practice_timezone, to_local
from portal_pulse.reports.reads import ReadModel, reads_of

__all__ = [
    "FOLLOWUP_FIELDS",
    "KIND_PREFIX",
    "ROSTER_ID_COLUMN",
    "Roster",
    "attach_roster",
    "check_practice",
    "data_clock",
    "fetch_followups",
    "followups_command",
    "format_followups",
    "load_roster",
    "parse_kinds",
    "short_kind",
]

KIND_PREFIX = "enrollment."
FOLLOWUP_FIELDS = (*ALERT_FIELDS, "days_overdue", "due_at_local")
"""JSON and CSV fields without a roster; with one, ``patient_id`` and the roster's columns follow."""
ROSTER_ID_COLUMN = "patient_id"
_TENTH_OF_A_DAY = timedelta(days=1) / 10
_KNOWN_PRACTICES_SHOWN = 10


def _utc(at: datetime) -> datetime:
    """chDB hands back naive UTC datetimes; make them aware."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def data_clock(source: ReadModel | Client, practice: str) -> datetime:
    """The practice's data clock (see the module docstring), else the wall clock."""
    return reads_of(source).last_seen(practice) or datetime.now(UTC)


def check_practice(source: ReadModel | Client, practice: str) -> datetime:
    """The practice's data clock; a ``UserError`` naming the known practices if it has no data."""
    reads = reads_of(source)
    seen = reads.last_seen(practice)
    if seen is not None:
        return seen
    known = reads.practices_with_data(_KNOWN_PRACTICES_SHOWN + 1)
    if not known:
        hint = "the database holds no events or alerts yet"
    else:
        more = ", …" if len(known) > _KNOWN_PRACTICES_SHOWN else ""
        hint = "practices with data: " + ", ".join(known[:_KNOWN_PRACTICES_SHOWN]) + more
    raise UserError(f"no data for practice {practice!r} ({hint})", EXIT_NO_DATA)


def short_kind(kind: str) -> str:
    """``enrollment.app_not_installed`` → ``app_not_installed`` (what ``--kind`` also accepts)."""
    return kind.removeprefix(KIND_PREFIX)


def parse_kinds(values: Iterable[str] | None) -> tuple[str, ...]:
    """Full kind names from ``--kind`` values (with or without ``enrollment.``), in SPEC order.

    An unknown kind is a ``UserError`` listing the known ones.
    """
    wanted: set[str] = set()
    for value in values or ():
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            kind = name if name.startswith(KIND_PREFIX) else KIND_PREFIX + name
            if kind not in FOLLOWUP_KINDS:
                known = ", ".join(short_kind(k) for k in FOLLOWUP_KINDS)
                raise UserError(f"unknown follow-up kind {part.strip()!r}: use one of {known}")
            wanted.add(kind)
    return tuple(k for k in FOLLOWUP_KINDS if k in wanted)


def _days_overdue(now: datetime, due_at: datetime) -> float:
    """Elapsed days since due, rounded down to a tenth (exact: integer division of timedeltas)."""
    return ((now - due_at) // _TENTH_OF_A_DAY) / 10


def _kind_rank(kind: str) -> tuple[int, str]:
    """SPEC §6 order (invitation → first login → app → dormancy), unknown kinds after."""
    if kind in FOLLOWUP_KINDS:
        return FOLLOWUP_KINDS.index(kind), kind
    return len(FOLLOWUP_KINDS), kind


def fetch_followups(
    source: ReadModel | Client,
    practice: str,
    now: datetime | None = None,
    *,
    kinds: Sequence[str] = (),
    timezone: str | None = None,
) -> list[dict[str, Any]]:
    """Open ``enrollment.*`` alerts of ``practice`` with ``days_overdue``, most overdue first.

    ``kinds`` keeps only those kinds (all when empty). With ``timezone``, ``due_at_local`` is the
    due time in that zone (ISO-8601 with its offset); without, it is None.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    reads = reads_of(source)
    clock = _utc(now) if now is not None else data_clock(reads, practice)
    rows = fetch_alerts(reads, practice=practice, open_only=True, kind_prefix=KIND_PREFIX)
    if kinds:
        rows = [r for r in rows if r["kind"] in kinds]
    for row in rows:
        for name, value in row.items():
            if isinstance(value, bytes):  # FixedString (patient_pseudonym) comes back as bytes
                row[name] = value.decode()
        due = datetime.fromisoformat(row["due_at"])
        row["days_overdue"] = _days_overdue(clock, due)
        row["due_at_local"] = (
            to_local(due, timezone).isoformat(timespec="seconds") if timezone else None
        )
    rows.sort(key=lambda r: (-r["days_overdue"], _kind_rank(r["kind"]), r["alert_id"]))
    return rows


# -- the roster ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roster:
    """A practice's own patient list, keyed by pseudonym. In memory only: never written."""

    columns: tuple[str, ...]
    """Output names of the roster's other columns (renamed ``roster_<name>`` on a clash)."""
    by_pseudonym: dict[str, dict[str, str]] = field(repr=False)
    """pseudonym → {``patient_id``: …, column: value, …}."""
    patients: int

    def __repr__(self) -> str:  # never show patient data in a traceback or log
        return f"Roster(columns={self.columns!r}, patients={self.patients})"


def _header_key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _delimiter(first_line: str) -> str:
    """The delimiter that makes the header hold a ``patient_id`` column (comma by default)."""
    for delimiter in (",", ";", "\t", "|"):
        if ROSTER_ID_COLUMN in (_header_key(h) for h in first_line.split(delimiter)):
            return delimiter
    return ","


def load_roster(
    path: str | Path,
    practice: str,
    pseudonymize: Callable[[str, str], str],
    reserved: Iterable[str] = FOLLOWUP_FIELDS,
) -> Roster:
    """Read a roster CSV (header row with a ``patient_id`` column) and key it by pseudonym.

    ``pseudonymize`` is the pipeline's ``Pseudonymizer``: ``(practice_id, patient_id)`` → the
    pseudonym ingest stored. Values are carried through as text with surrounding blanks removed;
    rows without a patient id are skipped, and the first row of a repeated id wins. Errors name
    the file and the header, never a patient's data.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"roster {path} does not exist (or is not a file)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"roster {path} is not UTF-8 text: save it as CSV (UTF-8)") from None
    except OSError as exc:
        raise UserError(f"roster {path} cannot be read: {exc.strerror}") from None
    if not text.strip():
        raise UserError(f"roster {path} is empty: it needs a header row with a patient_id column")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.splitlines()[0]))
    try:
        header = next(reader)
        keys = [_header_key(h) for h in header]
        if ROSTER_ID_COLUMN not in keys:
            found = ", ".join(h.strip() for h in header if h.strip()) or "nothing"
            raise UserError(
                f"roster {path} has no {ROSTER_ID_COLUMN} column in its header row (found: {found})"
            )
        id_index = keys.index(ROSTER_ID_COLUMN)
        taken = {*reserved, ROSTER_ID_COLUMN}
        extras: list[tuple[int, str]] = []
        for i, raw in enumerate(header):
            if i == id_index:
                continue
            name = raw.strip() or f"column_{i + 1}"
            if name in taken:
                name = f"roster_{name}"
            while name in taken:
                name += "_"
            taken.add(name)
            extras.append((i, name))
        by_pseudonym: dict[str, dict[str, str]] = {}
        for record in reader:
            if id_index >= len(record) or not record[id_index].strip():
                continue
            patient_id = record[id_index].strip()
            pseudonym = pseudonymize(practice, patient_id)
            if pseudonym in by_pseudonym:
                continue
            entry = {ROSTER_ID_COLUMN: patient_id}
            entry.update(
                {name: (record[i].strip() if i < len(record) else "") for i, name in extras}
            )
            by_pseudonym[pseudonym] = entry
    except csv.Error as exc:
        raise UserError(f"roster {path} is not valid CSV (line {reader.line_num}): {exc}") from None
    return Roster(tuple(name for _, name in extras), by_pseudonym, len(by_pseudonym))


def attach_roster(rows: list[dict[str, Any]], roster: Roster) -> int:
    """Put ``patient_id`` and the roster's columns beside each follow-up; None where unmatched.

    Returns how many follow-ups matched a roster patient.
    """
    empty = dict.fromkeys((ROSTER_ID_COLUMN, *roster.columns))
    matched = 0
    for row in rows:
        entry = roster.by_pseudonym.get(row["patient_pseudonym"])
        row.update(entry if entry is not None else empty)
        matched += entry is not None
    return matched


# -- output ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What the table says above the rows."""

    practice: str | None = None
    as_of: datetime | None = None
    timezone: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    total: int | None = None
    roster: Roster | None = None
    matched: int = 0


def _fields(roster: Roster | None) -> tuple[str, ...]:
    return (
        FOLLOWUP_FIELDS if roster is None else (*FOLLOWUP_FIELDS, ROSTER_ID_COLUMN, *roster.columns)
    )


def _table(rows: list[dict[str, Any]], ctx: _Context) -> str:
    lines = []
    if ctx.as_of is not None:
        where = f" for {ctx.practice}" if ctx.practice else ""
        when = (
            f"{format_local(ctx.as_of, ctx.timezone)} ({ctx.timezone})"
            if ctx.timezone
            else iso_z(ctx.as_of)
        )
        lines.append(f"open follow-ups{where} as of {when}")
    total = ctx.total if ctx.total is not None else len(rows)
    if ctx.counts:
        parts = [
            f"{n} {short_kind(k)}"
            for k, n in sorted(ctx.counts.items(), key=lambda i: _kind_rank(i[0]))
        ]
        lines.append(f"{total} open: " + ", ".join(parts))
    if ctx.roster is not None:
        lines.append(
            f"roster: {ctx.roster.patients} patients; {ctx.matched} of the {total}"
            " follow-ups matched"
        )
    if not rows:
        return "\n".join([*lines, "no open follow-ups"]) + "\n"
    if len(rows) < total:
        lines.append(f"showing the {len(rows)} most overdue")
    extra = () if ctx.roster is None else (ROSTER_ID_COLUMN, *ctx.roster.columns)
    columns = ("days_overdue", "kind", "due", *extra, "patient_pseudonym")

    def value(row: dict[str, Any], column: str) -> str:
        if column == "kind":
            return short_kind(row["kind"])
        if column == "due":
            due = datetime.fromisoformat(row["due_at"])
            return format_local(due, ctx.timezone) if ctx.timezone else str(iso_z(due))
        if column == "days_overdue":
            return f"{row['days_overdue']:.1f}"
        v = row.get(column)
        return "" if v is None else str(v)

    table = [[value(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        cells = [
            v.rjust(w) if c == "days_overdue" else v.ljust(w)
            for c, v, w in zip(columns, values, widths, strict=True)
        ]
        return "  ".join(cells).rstrip()

    if lines:
        lines.append("")
    lines.append(line(columns))
    lines += [line(t) for t in table]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]], fields: Sequence[str]) -> str:
    return to_csv(fields, rows)


def format_followups(
    rows: list[dict[str, Any]],
    fmt: str,
    *,
    as_of: datetime | None = None,
    roster: Roster | None = None,
    context: _Context | None = None,
) -> str:
    """``table`` (one list, most overdue first), ``json`` (SPEC §8 fields + days_overdue and
    due_at_local, + patient_id and the roster's columns with a roster) or ``csv`` (the same).

    ``as_of`` is shown above the table so readers know what "overdue" was measured against.
    """
    ctx = context or _Context(as_of=as_of, roster=roster)
    fields = _fields(ctx.roster)
    if fmt == "table":
        return _table(rows, ctx)
    if fmt == "json":
        return json.dumps([{k: r.get(k) for k in fields} for r in rows], indent=2) + "\n"
    if fmt == "csv":
        return _csv(rows, fields)
    raise ValueError(f"unknown format {fmt!r}: use table, json or csv")


def followups_command(
    source: ReadModel | Client,
    practice: str,
    fmt: str,
    now: datetime | None = None,
    *,
    kinds: Sequence[str] = (),
    limit: int | None = None,
    roster: Roster | None = None,
    timezone: str | Callable[[], str] | None = None,
) -> str:
    """What ``portal-pulse followups`` prints; a ``UserError`` for a practice with no data.

    ``kinds`` as from ``parse_kinds``; ``limit`` keeps the most overdue. Times are shown in
    ``timezone`` when it is a zone name, else in the practice's zone (``practice_timezone``, with
    a callable ``timezone`` as its fallback).
    """
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    reads = reads_of(source)
    seen = check_practice(reads, practice)
    clock = _utc(now) if now is not None else seen
    zone = timezone if isinstance(timezone, str) else practice_timezone(reads, practice, timezone)
    rows = fetch_followups(reads, practice, clock, kinds=kinds, timezone=zone)
    counts = dict(Counter(r["kind"] for r in rows))
    total = len(rows)
    matched = attach_roster(rows, roster) if roster is not None else 0
    if limit is not None:
        rows = rows[:limit]
    ctx = _Context(practice, clock, zone, counts, total, roster, matched)
    return format_followups(rows, fmt, context=ctx)
