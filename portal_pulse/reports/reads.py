"""The reads the reports make, as one small interface: the read model.

Every report (``alerts``, ``followups``, ``dashboard``, the worker's ``/status``) reads
ClickHouse only through the methods of ``ReadModel``. ``LocalReads`` answers them with the SQL
below on a clickhouse-connect client; ``sinks.remote.RemoteReads`` answers the same methods
through a running worker (one ``GET /reads/<name>`` endpoint per method), because chDB opens an
embedded database in one process at a time. So the SQL runs only where the database is, and the
network carries a method name and typed parameters, never SQL, a path or a URL (SPEC §9).

``ENDPOINTS`` names every method and the type of each parameter; the worker refuses anything
else with a 400 before it touches the database (``parse_parameters``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from portal_pulse.domain.followups import FOLLOWUP_KINDS
from portal_pulse.domain.records import ALERT_FIELDS
from portal_pulse.domain.sla import ALERT_KINDS as SLA_KINDS

__all__ = [
    "ALERT_KINDS",
    "ENDPOINTS",
    "KIND_PREFIXES",
    "PRACTICE_ID",
    "READ_ONLY",
    "WITHDRAWN",
    "BadParameter",
    "LocalReads",
    "MonthSpan",
    "Param",
    "ReadModel",
    "check_practice_id",
    "parse_parameters",
    "query_string",
    "reads_of",
]

PRACTICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
"""SPEC §2: 1-64 letters, digits, ``.``, ``_`` or ``-``."""
_MONTH = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
ALERT_KINDS = (*SLA_KINDS, *FOLLOWUP_KINDS)
KIND_PREFIXES = ("sla.", "enrollment.")
WITHDRAWN = ("hide", "show", "only")
"""What ``alerts`` does with withdrawn alerts (SPEC §7.1): leave them out (the default: they
stand for nothing), list them with the others, or list them alone."""
MAX_LIMIT = 1000
MAX_MONTHS = 240
"""The longest span of months one ``months`` read covers (20 years)."""

READ_ONLY: dict[str, Any] = {"readonly": 1}
"""Settings of every read the worker makes for a caller (defence in depth: the SQL is the
worker's own). On chDB 4.4, ``readonly=1`` refuses inserts, DDL, a ``SETTINGS`` clause and the
table functions that reach files, hosts or programs (``file``, ``url``, ``s3``, ``remote``,
``executable``, ``mysql``, ``postgresql``, ``hdfs``, ``azureBlobStorage``), but not
``INTO OUTFILE``, nor ``system.*`` tables; tests/unit/reports/test_reads.py shows each."""


class BadParameter(ValueError):
    """A request parameter the endpoint does not take, or a value not of its type."""


@dataclass(frozen=True)
class MonthSpan:
    """What ``dashboard`` says when a month has no row: is the practice known at all, and
    which months it has."""

    events: int
    first: str | None
    last: str | None


@runtime_checkable
class ReadModel(Protocol):
    """Everything the reports read. Values keep their Python types (datetimes are UTC)."""

    def alerts(
        self,
        *,
        practice: str | None = None,
        kind: str | None = None,
        kind_prefix: str | None = None,
        open_only: bool = False,
        withdrawn: str = "hide",
    ) -> list[dict[str, Any]]:
        """Latest version of each alert, SPEC §8 fields, by ``due_at`` then ``alert_id``.

        ``open_only``: neither resolved nor withdrawn. ``withdrawn``: one of ``WITHDRAWN``."""
        ...

    def open_alerts_by_kind(self) -> dict[str, int]:
        """Alerts neither resolved nor withdrawn, per kind."""
        ...

    def practice_ids(self) -> list[str]:
        """Practices configured (``practices``) or seen in ``events``, sorted."""
        ...

    def practices_with_data(self, limit: int) -> list[str]:
        """Up to ``limit`` practices with events or alerts, sorted."""
        ...

    def practices_with_events(self, limit: int) -> list[str]: ...

    def last_seen(self, practice: str) -> datetime | None:
        """The later of the practice's newest event and newest alert update."""
        ...

    def practice_zone(self, practice: str) -> str | None:
        """The zone of the practice's ``practices`` row, else of the ``default`` row."""
        ...

    def practice_month(self, practice: str, month: str) -> dict[str, Any] | None:
        """The ``monthly_portal_performance`` row of one practice-month, or None."""
        ...

    def months(self, practice: str, first: str, last: str) -> list[dict[str, Any]]:
        """The view's rows of the practice from ``first`` to ``last`` (``YYYY-MM``), in order."""
        ...

    def month_span(self, practice: str) -> MonthSpan: ...


def reads_of(source: Any) -> ReadModel:
    """A read model as is; a clickhouse-connect client as ``LocalReads`` on it."""
    return source if isinstance(source, ReadModel) else LocalReads(source)


# -- the SQL ---------------------------------------------------------------------------------------

_VIEW = "monthly_portal_performance"
_VIEW_COLUMNS = ("practice_id", "month")


class _Settled:
    """A client whose every query carries ``settings`` (the part of ``Client`` used here)."""

    def __init__(self, client: Any, settings: Mapping[str, Any] | None) -> None:
        self.client = client
        self.settings = dict(settings) if settings else None

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        return self.client.query(sql, parameters=parameters, settings=self.settings)


def _utc(at: datetime) -> datetime:
    """chDB hands back naive UTC datetimes; make them aware."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class LocalReads:
    """The read model on a clickhouse-connect client (chDB or a server).

    The worker passes ``settings=READ_ONLY``: those settings go with every query here and with
    no other, so the sinks' inserts on the same client are unaffected.
    """

    def __init__(self, client: Any, settings: Mapping[str, Any] | None = None) -> None:
        self.db = _Settled(client, settings)

    def alerts(
        self,
        *,
        practice: str | None = None,
        kind: str | None = None,
        kind_prefix: str | None = None,
        open_only: bool = False,
        withdrawn: str = "hide",
    ) -> list[dict[str, Any]]:
        if withdrawn not in WITHDRAWN:
            raise BadParameter(f"withdrawn must be one of {', '.join(WITHDRAWN)}")
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
        if open_only:  # a withdrawn alert is not open (SPEC §7.1)
            where.append("resolved_at IS NULL AND withdrawn_at IS NULL")
        if withdrawn == "hide":
            where.append("withdrawn_at IS NULL")
        elif withdrawn == "only":
            where.append("withdrawn_at IS NOT NULL")
        # Only constant column names and condition texts are joined; values are parameters.
        sql = (
            f"SELECT {', '.join(ALERT_FIELDS)} FROM alerts FINAL"  # noqa: S608
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY due_at, alert_id"
        )
        rows = self.db.query(sql, parameters=params).result_rows
        return [dict(zip(ALERT_FIELDS, values, strict=True)) for values in rows]

    def open_alerts_by_kind(self) -> dict[str, int]:
        rows = self.db.query(
            "SELECT kind, count() FROM alerts FINAL"
            " WHERE resolved_at IS NULL AND withdrawn_at IS NULL GROUP BY kind"
        ).result_rows
        return {kind: int(n) for kind, n in sorted(rows)}

    def practice_ids(self) -> list[str]:
        rows = self.db.query(
            "SELECT practice_id FROM (SELECT practice_id FROM practices"
            " WHERE practice_id != 'default'"
            " UNION DISTINCT SELECT DISTINCT practice_id FROM events) ORDER BY practice_id"
        ).result_rows
        return [row[0] for row in rows]

    def practices_with_data(self, limit: int) -> list[str]:
        rows = self.db.query(
            "SELECT practice_id FROM (SELECT DISTINCT practice_id FROM events"
            " UNION DISTINCT SELECT DISTINCT practice_id FROM alerts)"
            " ORDER BY practice_id LIMIT {n:UInt32}",
            parameters={"n": int(limit)},
        ).result_rows
        return [row[0] for row in rows]

    def practices_with_events(self, limit: int) -> list[str]:
        rows = self.db.query(
            "SELECT DISTINCT practice_id FROM events ORDER BY practice_id LIMIT {n:UInt32}",
            parameters={"n": int(limit)},
        ).result_rows
        return [row[0] for row in rows]

    def last_seen(self, practice: str) -> datetime | None:
        row = self.db.query(
            "SELECT (SELECT maxOrNull(occurred_at) FROM events WHERE practice_id = {p:String}),"
            " (SELECT maxOrNull(updated_at) FROM alerts WHERE practice_id = {p:String})",
            parameters={"p": practice},
        ).result_rows[0]
        seen = [_utc(v) for v in row if v is not None]
        return max(seen) if seen else None

    def practice_zone(self, practice: str) -> str | None:
        rows = self.db.query(
            "SELECT practice_id, timezone FROM practices FINAL"
            " WHERE practice_id IN ({p:String}, 'default')",
            parameters={"p": practice},
        ).result_rows
        zones = {pid: zone for pid, zone in rows if zone}
        return zones.get(practice) or zones.get("default") or None

    def practice_month(self, practice: str, month: str) -> dict[str, Any] | None:
        # The view's row itself, as a BI tool reads it: one definition of every figure.
        rows = self.months(practice, month, month)
        return rows[0] if rows else None

    def months(self, practice: str, first: str, last: str) -> list[dict[str, Any]]:
        from portal_pulse.reports.dashboard import METRIC_KEYS

        columns = (*_VIEW_COLUMNS, *METRIC_KEYS)
        result = self.db.query(  # constant names only; values are parameters
            f"SELECT {', '.join(columns)} FROM {_VIEW} "  # noqa: S608
            "WHERE practice_id = {practice:String} "
            "AND month >= {first:String} AND month <= {last:String} ORDER BY month",
            parameters={"practice": practice, "first": first, "last": last},
        )
        return [dict(zip(columns, row, strict=True)) for row in result.result_rows]

    def month_span(self, practice: str) -> MonthSpan:
        events = self.db.query(
            "SELECT count() FROM events WHERE practice_id = {p:String}", parameters={"p": practice}
        ).result_rows[0][0]
        first, last = self.db.query(
            f"SELECT min(month), max(month) FROM {_VIEW} WHERE practice_id = {{p:String}}",  # noqa: S608 -- constant view name
            parameters={"p": practice},
        ).result_rows[0]
        return MonthSpan(int(events), first or None, last or None)


# -- endpoints and their typed parameters ----------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One query parameter: its keyword in ``ReadModel``, its name on the wire, its type."""

    keyword: str
    type: str  # practice | month | alert_kind | kind_prefix | withdrawn | bool | limit
    required: bool = False
    wire: str | None = None
    default: Any = None
    """The method's own default: a call with it sends nothing (so a worker of an earlier
    release, which does not know the parameter, still answers the calls it can)."""

    @property
    def name(self) -> str:
        return self.wire or self.keyword


_PRACTICE = Param("practice", "practice", required=True)
ENDPOINTS: dict[str, tuple[Param, ...]] = {
    "alerts": (
        Param("practice", "practice"),
        Param("kind", "alert_kind"),
        Param("kind_prefix", "kind_prefix", wire="prefix"),
        Param("open_only", "bool", wire="open"),
        Param("withdrawn", "withdrawn", default="hide"),
    ),
    "open_alerts_by_kind": (),
    "practice_ids": (),
    "practices_with_data": (Param("limit", "limit", required=True),),
    "practices_with_events": (Param("limit", "limit", required=True),),
    "last_seen": (_PRACTICE,),
    "practice_zone": (_PRACTICE,),
    "practice_month": (_PRACTICE, Param("month", "month", required=True)),
    "months": (
        _PRACTICE,
        Param("first", "month", required=True),
        Param("last", "month", required=True),
    ),
    "month_span": (_PRACTICE,),
}
"""Method name → its parameters. The endpoint is ``GET /reads/<name with - for _>``."""


def path_of(name: str) -> str:
    return "/reads/" + name.replace("_", "-")


def check_practice_id(practice: str) -> str:
    """``practice`` if it is a SPEC §2 practice id, else ``BadParameter``."""
    if not PRACTICE_ID.fullmatch(practice):
        raise BadParameter(
            "a practice id is 1-64 letters, digits, '.', '_' or '-' (SPEC §2), "
            f"got {practice[:70]!r}"
        )
    return practice


def _value(param: Param, text: str) -> Any:
    if param.type == "practice":
        return check_practice_id(text)
    if param.type == "month":
        if not _MONTH.fullmatch(text):
            raise BadParameter(f"{param.name} must be YYYY-MM")
        return text
    if param.type == "alert_kind":
        if text not in ALERT_KINDS:
            raise BadParameter(f"{param.name} must be one of {', '.join(ALERT_KINDS)}")
        return text
    if param.type == "kind_prefix":
        if text not in KIND_PREFIXES:
            raise BadParameter(f"{param.name} must be one of {', '.join(KIND_PREFIXES)}")
        return text
    if param.type == "withdrawn":
        if text not in WITHDRAWN:
            raise BadParameter(f"{param.name} must be one of {', '.join(WITHDRAWN)}")
        return text
    if param.type == "bool":
        if text not in ("true", "false"):
            raise BadParameter(f"{param.name} must be true or false")
        return text == "true"
    if param.type == "limit":
        if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_LIMIT:
            raise BadParameter(f"{param.name} must be an integer from 1 to {MAX_LIMIT}")
        return int(text)
    raise AssertionError(param.type)


def parse_parameters(name: str, query: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The keyword arguments of ``name`` from a request's query pairs; ``BadParameter`` for an
    unknown endpoint or parameter, a repeated or missing one, or a value not of its type."""
    if name not in ENDPOINTS:
        raise BadParameter(f"no read named {name!r}")
    params = {p.name: p for p in ENDPOINTS[name]}
    kwargs: dict[str, Any] = {}
    for key, text in query:
        param = params.get(key)
        if param is None:
            raise BadParameter(f"{path_of(name)} takes no parameter {key[:40]!r}")
        if param.keyword in kwargs:
            raise BadParameter(f"{key} is given twice")
        kwargs[param.keyword] = _value(param, text)
    missing = [p.name for p in ENDPOINTS[name] if p.required and p.keyword not in kwargs]
    if missing:
        raise BadParameter(f"{path_of(name)} needs {', '.join(missing)}")
    if name == "months":
        (y0, m0), (y1, m1) = (map(int, kwargs[k].split("-")) for k in ("first", "last"))
        span = (y1 * 12 + m1) - (y0 * 12 + m0)
        if not 0 <= span < MAX_MONTHS:
            raise BadParameter(f"first must not be after last, at most {MAX_MONTHS} months apart")
    return kwargs


def query_string(name: str, kwargs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The query pairs of a call (what ``parse_parameters`` turns back into ``kwargs``)."""
    pairs = []
    for param in ENDPOINTS[name]:
        value = kwargs.get(param.keyword)
        if value is None or value == param.default or (param.type == "bool" and value is False):
            continue
        if param.type == "bool":
            pairs.append((param.name, "true"))
        else:
            pairs.append((param.name, str(value)))
    return pairs
