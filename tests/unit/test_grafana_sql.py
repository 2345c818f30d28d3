"""The shipped Grafana dashboards' SQL, run on chDB the way Grafana and its ClickHouse plugin
would send it, with two practices' data and hostile practice ids (issue 21).

Grafana fills ``${var:format}`` in the browser with its format registry (``formatRegistry.ts``);
the ClickHouse plugin (grafana-clickhouse-datasource) passes a value with no format through
raw and expands its ``$__`` macros in its backend (``pkg/macros/macros.go``). Both are
re-implemented here for what the dashboards use, and the result must return exactly what the same
query returns with the practice bound as a ClickHouse query parameter (which no value can escape).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import Practices
from portal_pulse.reports.practices_sync import sync_practices
from sinks.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "docker" / "grafana" / "provisioning" / "dashboards"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"

# Grafana's time range for the run (the plugin sends it with each query).
FROM = datetime(2025, 1, 1, tzinfo=UTC)
TO = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
INTERVAL_SECONDS = 3600

GOOD = ("PA", "PB")
HOSTILE_NAMED = "P9' OR '1'='1"  # a practice with data whose id is itself an attack
HOSTILE = (
    "P9' OR '1'='1",
    "P9' OR 1=1 --",
    "P9' UNION ALL SELECT * FROM events --",
    "x' UNION ALL SELECT practice_id, kind, '', count() FROM alerts GROUP BY practice_id, kind --",
    "P9\\' OR 1=1 --",  # the backslash trick: ClickHouse reads \' inside a literal as a quote
    "P9\\",
    "P9%27 OR 1=1 --",
    "') OR 1=1 --",
    "P9'; DROP TABLE events; --",
    "P9\n' OR 1=1 --",
)


# --- Grafana's formats and the plugin's macros -------------------------------------------------


def _encode_uri_component_strict(value: str) -> str:
    """Grafana's ``encodeURIComponentStrict``: encodeURIComponent, then ``!'()*`` encoded too;
    what is left is RFC 3986's unreserved set: letters, digits and ``-._~``."""
    return quote(value.encode("utf-8"), safe="-_.~")


def grafana_format(value: str | list[str], fmt: str | None) -> str:
    """One variable's text as Grafana interpolates it into a ClickHouse plugin query."""
    if fmt is None:  # the plugin's own formatter: a single value raw, a list quoted unescaped
        return "'" + "','".join(value) + "'" if isinstance(value, list) else value
    if fmt == "percentencode":
        joined = "{" + ",".join(value) + "}" if isinstance(value, list) else value
        return _encode_uri_component_strict(joined)
    if fmt == "sqlstring":  # ' doubled and " backslashed, each value quoted; \ left as it is

        def one(v: str) -> str:
            return "'" + v.replace("'", "''").replace('"', '\\"') + "'"

        return ",".join(one(v) for v in value) if isinstance(value, list) else one(value)
    raise AssertionError(f"format {fmt!r} is not implemented here: add it from Grafana's docs")


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(?!__)(\w+)")


def interpolate(sql: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        fmt = match.group(2) or match.group(4)
        return grafana_format(values[name], fmt)

    return _VARIABLE.sub(one, sql)


def _datetime(t: datetime) -> str:
    return f"toDateTime({int(t.timestamp())})"


def _datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(t.timestamp() * 1000)})"


def _date(t: datetime) -> str:
    return f"toDate('{t:%Y-%m-%d}')"


def _range(column: str, low: str, high: str) -> str:
    return f"{column} >= {low} AND {column} <= {high}"


MACROS: dict[str, Any] = {
    "fromTime": lambda: _datetime(FROM),
    "toTime": lambda: _datetime(TO),
    "fromTime_ms": lambda: _datetime64(FROM),
    "toTime_ms": lambda: _datetime64(TO),
    "timeFilter": lambda c: _range(c, _datetime(FROM), _datetime(TO)),
    "timeFilter_ms": lambda c: _range(c, _datetime64(FROM), _datetime64(TO)),
    "dateFilter": lambda c: _range(c, _date(FROM), _date(TO)),
    "dateTimeFilter": lambda d, t: (
        f"({_range(d, _date(FROM), _date(TO))}) AND ({_range(t, _datetime(FROM), _datetime(TO))})"
    ),
    "timeInterval": lambda c: (
        f"toStartOfInterval(toDateTime({c}), INTERVAL {INTERVAL_SECONDS} second)"
    ),
    "interval_s": lambda: str(INTERVAL_SECONDS),
}
MACROS["dt"] = MACROS["dateTimeFilter"]


def expand_macros(sql: str) -> str:
    """The plugin's ``$__name`` and ``$__name(args)``, arguments split at top-level commas."""
    out, i = [], 0
    for match in re.finditer(r"\$__(\w+)", sql):
        if match.start() < i:
            continue
        name = match.group(1)
        assert name in MACROS, f"macro $__{name} is not expanded here: add it from the plugin"
        out.append(sql[i : match.start()])
        i = match.end()
        args: list[str] = []
        if i < len(sql) and sql[i] == "(":
            depth, start = 0, i + 1
            for j in range(i, len(sql)):
                if sql[j] == "(":
                    depth += 1
                elif sql[j] == ")":
                    depth -= 1
                    if depth == 0:
                        args.append(sql[start:j].strip())
                        i = j + 1
                        break
                elif sql[j] == "," and depth == 1:
                    args.append(sql[start:j].strip())
                    start = j + 1
            args = [a for a in args if a]
        out.append(MACROS[name](*args))
    out.append(sql[i:])
    return "".join(out)


def grafana_sql(sql: str, values: dict[str, str]) -> str:
    """What the plugin's backend runs: variables filled in the browser, then macros."""
    return expand_macros(interpolate(sql, values))


def test_format_implementation_matches_grafanas_documented_examples() -> None:
    # Grafana's docs: sqlstring of ["test'1", "test2"] is 'test''1','test2'; percentencode
    # of ["value1", "value2"] is %7Bvalue1%2Cvalue2%7D.
    assert grafana_format(["test'1", "test2"], "sqlstring") == "'test''1','test2'"
    assert grafana_format(["value1", "value2"], "percentencode") == "%7Bvalue1%2Cvalue2%7D"
    assert grafana_format("a b!'()*~", "percentencode") == "a%20b%21%27%28%29%2A~"
    assert grafana_format("é", "percentencode") == "%C3%A9"
    assert grafana_format(["a", "b"], None) == "'a','b'"


def test_macro_expansion_matches_the_plugin() -> None:
    assert expand_macros("$__timeFilter(t) AND x") == (
        f"t >= toDateTime({int(FROM.timestamp())}) AND t <= toDateTime({int(TO.timestamp())}) AND x"
    )
    assert expand_macros("f($__fromTime, 1)") == f"f(toDateTime({int(FROM.timestamp())}), 1)"
    with pytest.raises(AssertionError, match="not expanded"):
        expand_macros("$__unknownMacro(x)")


# --- The dashboards ---------------------------------------------------------------------------


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _is_clickhouse(obj: dict) -> bool:
    ds = obj.get("datasource") or {}
    return ds.get("type") == CLICKHOUSE_PLUGIN


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, SQL) of every ClickHouse panel target, nested rows included."""
    found = []
    for name, dash in _dashboards().items():
        stack = list(dash.get("panels", []))
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if _is_clickhouse(target) or (
                    not target.get("datasource") and _is_clickhouse(panel)
                ):
                    found.append((name, panel["title"], target["rawSql"]))
    return found


def variable_queries() -> list[tuple[str, dict]]:
    return [
        (name, var)
        for name, dash in _dashboards().items()
        for var in dash.get("templating", {}).get("list", [])
        if _is_clickhouse(var)
    ]


def test_the_dashboards_have_clickhouse_panels_and_a_practice_variable() -> None:
    assert len(panel_queries()) >= 8
    assert [v["name"] for _, v in variable_queries()] == ["practice"]


def test_every_variable_in_sql_can_never_leave_a_string_literal() -> None:
    """The only form allowed: decodeURLComponent('${var:percentencode}'). Percent-encoding leaves
    letters, digits, ``-._~`` and ``%``: no quote or backslash can reach ClickHouse's parser.
    (``sqlstring`` is not enough on ClickHouse, which reads backslash escapes in literals.)"""
    safe = re.compile(r"decodeURLComponent\('\$\{(\w+):percentencode\}'\)")
    for name, title, sql in panel_queries():
        rest = safe.sub("", sql)
        assert not _VARIABLE.search(rest), (name, title, rest)
        assert safe.search(sql), (name, title, "every panel filters by practice")
    for name, var in variable_queries():
        assert not _VARIABLE.search(var["query"]), (name, var["name"])


def test_practice_variable_is_single_valued() -> None:
    """A multi-value or "All" practice would be percent-encoded as one "{a,b}" string: allowed
    only if the panels are rewritten for it (and this test with them)."""
    for _, var in variable_queries():
        assert var.get("multi", False) is False
        assert var.get("includeAll", False) is False


def test_sqlstring_alone_is_not_safe_on_clickhouse(grafana_db: Client) -> None:
    """Why the dashboards do not use ``'${practice:sqlstring}'`` (Grafana's SQL string format):
    it doubles quotes but leaves backslashes, and ClickHouse reads ``\\'`` as a quote inside a
    literal, so the backslash trick still returns every practice's rows."""
    sql = "SELECT DISTINCT practice_id FROM monthly_portal_performance WHERE practice_id = ${p:sqlstring}"
    leaked = grafana_db.query(grafana_sql(sql, {"p": "P9\\' OR 1=1 --"})).result_rows
    assert {row[0] for row in leaked} >= set(GOOD)


# --- Running them -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grafana_db(chdb_client: Client) -> Iterator[Client]:
    """A database of its own on the session's chDB: the migrated schema, with events, alerts
    and live metrics for PA, PB and a practice whose id is an injection string."""
    name = f"grafana_{uuid.uuid4().hex[:10]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_client.path}", database=name)  # type: ignore[attr-defined]
    try:
        migrate(client)
        practices = Practices.from_mapping({"practices": {"default": {"timezone": "UTC"}}})
        sync_practices(client, practices)  # local midnights before the first event
        _seed(client)
        sync_practices(client, practices)
        yield client
    finally:
        client.close()
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


_EVENT_COLUMNS = ["event_id", "event_type", "occurred_at", "practice_id", "patient_pseudonym",
                  "channel", "direction", "result_id", "amount_cents"]  # fmt: skip


def _seed(client: Client) -> None:
    """Each practice a different size (n = 0, 1, 2), so that every panel's numbers differ."""
    events, alerts, live, responses = [], [], [], []
    for n, practice in enumerate((*GOOD, HOSTILE_NAMED)):
        for patient in range(3 + 2 * n):
            who = f"pseudo-{practice}-{patient}"
            for month in (3, 4):
                at = datetime(2025, month, 10, 12, patient, tzinfo=UTC)
                ev = f"{practice}-{patient}-{month}"
                booked = "portal" if patient <= n else "phone"
                paid = "portal" if patient <= n else "phone"
                events += [
                    [f"{ev}-seen", "patient.seen", at, practice, who, "", "", "", 0],
                    [f"{ev}-msg", "message.sent", at, practice, who, "portal", "", "", 0],
                    [f"{ev}-book", "appointment.booked", at, practice, who, booked, "", "", 0],
                    [f"{ev}-pay", "payment.made", at, practice, who, paid, "", "", 100 + n],
                    [f"{ev}-call", "phone.call", at, practice, who, "", "inbound", "", 0],
                    [f"{ev}-post", "result.posted", at, practice, who, "", "", f"{ev}-r", 0],
                ]  # fmt: skip
                if patient <= n:  # a login implies enrolment: n + 1 of 3 + 2n enrolled
                    events += [
                        [f"{ev}-login", "portal.login", at, practice, who, "web", "", "", 0],
                        [f"{ev}-view", "result.viewed", at, practice, who, "", "", f"{ev}-r", 0],
                    ]
                if patient == 0:
                    events.append(
                        [f"{ev}-enrol", "portal.enrolled", at, practice, who, "", "", "", 0]
                    )
            if patient <= n:
                at = datetime(2025, 3, 11, 12, tzinfo=UTC)
                responses.append(
                    [f"{practice}-resp-{patient}", practice, f"th-{patient}", who, "clinical",
                     "nurse", "nurse", at, at, at, 1, 60.0 * (n + 1), 90.0 * (n + 1), at, at, 1, 1]
                )  # fmt: skip
        for i in range(n + 1):
            alerts.append(
                [f"{practice}-a{i}", "sla.at_risk", practice, f"th-{i}", f"pseudo-{practice}-0",
                 "clinical", "nurse", datetime(2025, 4, 1, tzinfo=UTC),
                 datetime(2025, 3, 31, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC), None, 1]
            )  # fmt: skip
        # One alert later data withdrew (SPEC §7.1): no panel may count it as open.
        alerts.append(
            [f"{practice}-w", "sla.at_risk", practice, "th-w", f"pseudo-{practice}-0",
             "clinical", "nurse", datetime(2025, 4, 1, tzinfo=UTC),
             datetime(2025, 3, 31, tzinfo=UTC), datetime(2025, 4, 2, tzinfo=UTC),
             datetime(2025, 4, 2, tzinfo=UTC), 2]
        )  # fmt: skip
        live.append([practice, 0, datetime(2025, 4, 10).date(), 10 + n, 20 + n,
                      datetime(2025, 4, 10, tzinfo=UTC), 1])  # fmt: skip
    client.insert("events", events, column_names=_EVENT_COLUMNS)
    client.insert(
        "alerts",
        alerts,
        column_names=["alert_id", "kind", "practice_id", "subject_id", "patient_pseudonym",
                      "category", "staff_pool", "due_at", "raised_at", "updated_at",
                      "withdrawn_at", "version"],
    )  # fmt: skip
    client.insert(
        "message_responses",
        responses,
        column_names=["response_id", "practice_id", "thread_id", "patient_pseudonym", "category",
                      "routed_pool", "replied_by_pool", "first_message_at", "clock_started_at",
                      "replied_at", "messages_answered", "response_business_minutes",
                      "response_wall_minutes", "internal_due_at", "external_due_at",
                      "met_internal_target", "met_external_promise"],
    )  # fmt: skip
    client.insert(
        "live_metrics",
        live,
        column_names=["practice_id", "partition", "day", "logins", "logins_7d", "as_of", "version"],
    )


def _bound(sql: str) -> str:
    """The same query with the practice bound as a ClickHouse parameter instead."""
    return re.sub(r"decodeURLComponent\('\$\{practice:percentencode\}'\)", "{p:String}", sql)


def _rows(client: Client, sql: str, **params: str) -> list[tuple]:
    return [tuple(r) for r in client.query(sql, parameters=params or None).result_rows]


PANELS = panel_queries()


@pytest.mark.parametrize(("dashboard", "title", "sql"), PANELS, ids=[p[1] for p in PANELS])
def test_panel_returns_exactly_the_chosen_practices_rows(
    grafana_db: Client, dashboard: str, title: str, sql: str
) -> None:
    results = {}
    for practice in (*GOOD, HOSTILE_NAMED):
        got = _rows(grafana_db, grafana_sql(sql, {"practice": practice}))
        want = _rows(grafana_db, expand_macros(_bound(sql)), p=practice)
        assert got == want, (title, practice)
        assert got, (title, practice, "the seeded practice has rows")
        results[practice] = got
    assert len({tuple(r) for r in results.values()}) == len(results), "practices differ"


def test_the_open_alerts_panel_counts_no_withdrawn_alert(grafana_db: Client) -> None:
    (sql,) = [sql for _, title, sql in PANELS if title == "Open alerts"]
    for n, practice in enumerate((*GOOD, HOSTILE_NAMED)):
        rows = _rows(grafana_db, grafana_sql(sql, {"practice": practice}))
        assert rows == [("sla.at_risk", "nurse", n + 1)], practice


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_practice_ids_return_nothing(grafana_db: Client, hostile: str) -> None:
    """Every panel parses and runs with the value, and finds no practice of that name (the one
    hostile id with data is handled above)."""
    for _, title, sql in PANELS:
        got = _rows(grafana_db, grafana_sql(sql, {"practice": hostile}))
        want = _rows(grafana_db, expand_macros(_bound(sql)), p=hostile)
        assert got == want, (title, hostile)
        if hostile != HOSTILE_NAMED:
            assert got == [], (title, hostile)


def test_variable_queries_run_and_list_the_practices(grafana_db: Client) -> None:
    for _, var in variable_queries():
        values = [r[0] for r in _rows(grafana_db, grafana_sql(var["query"], {}))]
        assert set(values) == {*GOOD, HOSTILE_NAMED}, var["name"]


def test_panels_read_only_what_the_bi_user_is_granted() -> None:
    """Grafana reads as `bi` (docker/clickhouse/users.xml): a panel naming any other table would
    fail there, whatever it returned on chDB."""
    from tests.unit.test_docker_clickhouse_users import granted

    allowed = {table for (_db, table), rights in granted("bi").items() if "SELECT" in rights}
    sources = [sql for *_, sql in PANELS] + [v["query"] for _, v in variable_queries()]
    for sql in sources:
        named = set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", sql, flags=re.IGNORECASE))
        assert named <= allowed, (sql, named - allowed)
