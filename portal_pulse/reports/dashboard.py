"""The monthly portal dashboard (SPEC §1, §4): read ``monthly_portal_performance``, render it.

ClickHouse computes every metric (migration 0002); this module only fetches rows and lays them
out: the article's text dashboard, a JSON object with exactly the SPEC §4 keys, and one
self-contained HTML page whose charts are inline SVG drawn here, so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = [
    "METRIC_KEYS",
    "RATE_KEYS",
    "MonthNotFound",
    "fetch_month",
    "fetch_trailing",
    "key_opportunities",
    "previous_month",
    "render_html",
    "render_json",
    "render_text",
]

METRIC_KEYS: tuple[str, ...] = (
    "unique_patients", "enrolled_patients", "enrollment_rate", "new_enrollments", "active_users",
    "active_user_rate", "multi_feature_users", "multi_feature_rate", "patient_messages",
    "staff_replies", "messages_per_active_user", "portal_bookings", "total_bookings",
    "portal_booking_rate", "results_viewed", "same_day_view_rate",
    "viewed_before_staff_contact_rate", "portal_payment_cents", "total_payment_cents",
    "portal_payment_share", "inbound_calls", "phone_volume_change", "responses",
    "avg_response_business_hours", "median_response_business_hours",
    "p90_response_business_hours", "avg_response_hours", "within_internal_target_rate",
    "within_external_promise_rate", "sla_breaches", "avg_satisfaction_portal_users",
    "app_install_rate",
)  # fmt: skip
"""SPEC §4 keys, in its order: the view's columns after practice_id and month."""

RATE_KEYS = frozenset(
    k for k in METRIC_KEYS if k.endswith(("_rate", "_share")) or k == "phone_volume_change"
)
"""Fractions 0..1 (phone_volume_change may go past either end); month-over-month in points."""

VIEW = "monthly_portal_performance"
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


class MonthNotFound(LookupError):
    """No row for the practice and month: no events for it, or the practice is unknown."""


def _check_month(month: str) -> tuple[int, int]:
    match = _MONTH.match(month)
    if not match:
        raise ValueError(f"month must be YYYY-MM, got {month!r}")
    return int(match.group(1)), int(match.group(2))


def previous_month(month: str, back: int = 1) -> str:
    year, mon = _check_month(month)
    index = year * 12 + mon - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _month_name(month: str, *, with_year: bool = True) -> str:
    year, mon = _check_month(month)
    return f"{_MONTH_NAMES[mon - 1]} {year}" if with_year else _MONTH_NAMES[mon - 1]


def _clean(value: Any) -> Any:
    """Plain JSON-able numbers; a NaN (never expected) is shown as missing rather than 'NaN'."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fetch(client: Client, practice: str, first: str, last: str) -> list[dict[str, Any]]:
    columns = ("practice_id", "month", *METRIC_KEYS)
    result = client.query(
        f"SELECT {', '.join(columns)} FROM {VIEW} "
        "WHERE practice_id = {practice:String} "
        "AND month >= {first:String} AND month <= {last:String} ORDER BY month",
        parameters={"practice": practice, "first": first, "last": last},
    )
    return [{c: _clean(v) for c, v in zip(columns, row, strict=True)} for row in result.result_rows]


def fetch_month(client: Client, practice: str, month: str) -> dict[str, Any]:
    """practice_id, month and every SPEC §4 key (numbers, or None where undefined)."""
    _check_month(month)
    rows = _fetch(client, practice, month, month)
    if not rows:
        raise MonthNotFound(f"no data for practice {practice!r} in {month}")
    return rows[0]


def fetch_trailing(client: Client, practice: str, month: str, n: int = 12) -> list[dict[str, Any]]:
    """The months (oldest first) among the ``n`` ending at ``month`` that have data."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return _fetch(client, practice, previous_month(month, n - 1), month)


# -- formatting ------------------------------------------------------------------------------------


def _num(value: float, digits: int = 1) -> str:
    """Rounded, without a trailing '.0'."""
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.0f}%"


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _dollars(cents: float | None) -> str:
    return "n/a" if cents is None else f"${cents / 100:,.0f}"


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}/5.0"


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} hours"


def _change(key: str, current: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """'↑ 3 pp' for rates, '↑ 5%' for counts; None when there is nothing to compare."""
    if previous is None:
        return None
    now, before = current.get(key), previous.get(key)
    if now is None or before is None:
        return None
    if key in RATE_KEYS:
        delta, unit = (now - before) * 100, " pp"
    else:
        if before == 0:
            return None
        delta, unit = (now - before) / before * 100, "%"
    if round(delta, 1) == 0:
        return "no change"
    return f"{'↑' if delta > 0 else '↓'} {_num(abs(delta))}{unit}"


def _with_change(
    text: str, key: str, current: dict[str, Any], previous: dict[str, Any] | None
) -> str:
    change = _change(key, current, previous)
    if change is None or previous is None:
        return text
    return f"{text} ({change} from {_month_name(previous['month'], with_year=False)})"


# -- opportunities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    key: str
    target: float
    advice: Callable[[float], str]


# The article's benchmarks where it gives one (enrolment 60–70 %, active users 40–50 %); elsewhere
# the levels of its sample dashboard, rounded, as the bar a practice should reach.
_TARGETS = (
    _Target(
        "app_install_rate",
        0.50,
        lambda v: f"Increase app installation (currently {_pct(v)} of users)",
    ),
    _Target(
        "enrollment_rate",
        0.60,
        lambda v: f"Grow portal enrollment (currently {_pct(v)} of patients; benchmark 60–70%)",
    ),
    _Target(
        "active_user_rate",
        0.40,
        lambda v: f"Re-engage enrolled patients (currently {_pct(v)} active; benchmark 40–50%)",
    ),
    _Target(
        "portal_booking_rate",
        0.30,
        lambda v: f"Move scheduling online (currently {_pct(v)} of appointments booked online)",
    ),
    _Target(
        "same_day_view_rate",
        0.80,
        lambda v: f"Get results seen sooner (currently {_pct(v)} viewed the day they are posted)",
    ),
    _Target(
        "within_internal_target_rate",
        0.90,
        lambda v: f"Reply to messages the same day (currently {_pct(v)} within the target)",
    ),
    _Target(
        "portal_payment_share",
        0.20,
        lambda v: f"Promote online bill pay (currently {_pct(v)} of collections)",
    ),
)


def key_opportunities(current: dict[str, Any], limit: int = 3) -> list[str]:
    """The measures furthest below their targets (relative shortfall), worst first."""
    gaps = []
    for order, t in enumerate(_TARGETS):
        value = current.get(t.key)
        if value is not None and value < t.target:
            gaps.append(((t.target - value) / t.target, -order, t.advice(value)))
    gaps.sort(reverse=True)
    return [advice for _, _, advice in gaps[:limit]]


# -- text and JSON ---------------------------------------------------------------------------------


def render_text(current: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """The article's sample dashboard, filled from one month (and the one before, if any)."""
    if previous is not None and previous.get("month") != previous_month(current["month"]):
        previous = None
    c = current

    def change(text: str, key: str) -> str:
        return _with_change(text, key, c, previous)

    prev_name = _month_name(previous["month"], with_year=False) if previous else None
    lines = [
        f"Portal Performance - {_month_name(c['month'])}",
        f"Practice: {c['practice_id']}",
        "Adoption",
        "- " + change(f"Enrollment Rate: {_pct(c['enrollment_rate'])}", "enrollment_rate"),
        "- " + change(f"Active Users: {_pct(c['active_user_rate'])}", "active_user_rate"),
        "- " + change(f"New Enrollments: {_count(c['new_enrollments'])}", "new_enrollments"),
        f"- Multi-feature Users: {_pct(c['multi_feature_rate'])} of active users",
        "Engagement",
        f"- Messages: {_count(c['staff_replies'])} sent, {_count(c['patient_messages'])} received",
        f"- Appointments Scheduled: {_count(c['portal_bookings'])} "
        f"({_pct(c['portal_booking_rate'])} of total)",
        f"- Results Viewed: {_count(c['results_viewed'])} "
        f"({_pct(c['same_day_view_rate'])} same-day viewing)",
        f"- Payments Made: {_dollars(c['portal_payment_cents'])} "
        f"({_pct(c['portal_payment_share'])} of total collections)",
        "Impact",
    ]
    phone = c["phone_volume_change"]
    if phone is None or prev_name is None:
        lines.append(f"- Phone Volume: {_count(c['inbound_calls'])} inbound calls")
    else:
        arrow = (
            "no change"
            if round(phone * 100) == 0
            else f"{'↑' if phone > 0 else '↓'} {abs(phone) * 100:.0f}%"
        )
        lines.append(f"- Phone Volume: {arrow} vs {prev_name}")
    lines += [
        f"- Average Message Response Time: {_hours(c['avg_response_hours'])}",
        f"- Patient Satisfaction (portal users): {_score(c['avg_satisfaction_portal_users'])}",
        "Key Opportunities",
    ]
    opportunities = key_opportunities(c)
    if opportunities:
        lines += [f"{i}. {text}" for i, text in enumerate(opportunities, 1)]
    else:
        lines.append("1. Hold the gains: every tracked measure is at or above its target")
    return "\n".join(lines) + "\n"


def render_json(current: dict[str, Any]) -> str:
    """One object: practice_id, month and exactly the SPEC §4 keys."""
    obj = {"practice_id": current["practice_id"], "month": current["month"]}
    obj.update({key: current.get(key) for key in METRIC_KEYS})
    return json.dumps(obj, indent=2) + "\n"


# -- HTML and SVG ----------------------------------------------------------------------------------

_W, _H = 560, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 36, 44
_COLOURS = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c")


@dataclass(frozen=True)
class _Series:
    label: str
    values: list[float | None]
    colour: str


@dataclass(frozen=True)
class _Band:
    low: float
    high: float
    colour: str
    label: str


def _nice_max(value: float) -> float:
    """The smallest 'round' axis top at or above value (quarters of it label the grid)."""
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def _svg_chart(
    title: str,
    months: Sequence[str],
    series: Sequence[_Series],
    *,
    kind: str = "line",
    y_max: float | None = None,
    y_format: Callable[[float], str] = lambda v: _num(v),
    bands: Sequence[_Band] = (),
) -> str:
    """A small line or grouped-bar chart as an inline <svg> (missing values leave gaps)."""
    e = html.escape
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    known = [v for s in series for v in s.values if v is not None]
    top = (
        y_max
        if y_max is not None
        else _nice_max(max([*known, *(b.high for b in bands)], default=0) * 1.1)
    )
    n = max(len(months), 1)
    slot = plot_w / n

    def x(i: int) -> float:
        return _LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return _TOP + plot_h - max(0.0, min(v, top)) / top * plot_h

    # Legend items flow left to right and wrap; the chart grows a line per extra legend row.
    legend: list[tuple[float, int, str, str]] = []
    lx, row = float(_LEFT), 0
    for item, colour in [(s.label, s.colour) for s in series] + [
        (b.label, b.colour) for b in bands
    ]:
        width = 22 + 6.2 * len(item)
        if lx + width > _W - _RIGHT and lx > _LEFT:
            lx, row = float(_LEFT), row + 1
        legend.append((lx, row, item, colour))
        lx += width
    height = _H + 16 * row

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {_W} {height}" '
        f'width="{_W}" height="{height}" aria-label="{e(title)}">',
        f"<title>{e(title)}</title>",
        f'<text x="{_LEFT}" y="20" class="ct">{e(title)}</text>',
    ]
    for band in bands:
        parts.append(
            f'<rect x="{_LEFT}" y="{y(band.high):.1f}" width="{plot_w}" '
            f'height="{y(band.low) - y(band.high):.1f}" fill="{band.colour}" fill-opacity="0.18">'
            f"<title>{e(band.label)}</title></rect>"
        )
    for k in range(5):
        v = top * k / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" class="yl">{e(y_format(v))}</text>'
        )
    for i, month in enumerate(months):
        year, mon = _check_month(month)
        label = _MONTH_NAMES[mon - 1][:3] + (f" {year % 100:02d}" if i == 0 or mon == 1 else "")
        parts.append(f'<text x="{x(i):.1f}" y="{_H - _BOTTOM + 16}" class="xl">{e(label)}</text>')
    if kind == "bar":
        width = slot * 0.8 / max(len(series), 1)
        for j, s in enumerate(series):
            for i, v in enumerate(s.values):
                if v is None:
                    continue
                bx = _LEFT + slot * i + slot * 0.1 + width * j
                parts.append(
                    f'<rect x="{bx:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                    f'height="{_TOP + plot_h - y(v):.1f}" fill="{s.colour}">'
                    f"<title>{e(s.label)} {e(months[i])}: {e(y_format(v))}</title></rect>"
                )
    else:
        for s in series:
            run: list[str] = []
            for i, v in enumerate([*s.values, None]):
                if v is not None:
                    run.append(f"{x(i):.1f},{y(v):.1f}")
                    continue
                if len(run) > 1:
                    parts.append(
                        f'<polyline points="{" ".join(run)}" fill="none" '
                        f'stroke="{s.colour}" stroke-width="2.5"/>'
                    )
                run = []
            for i, v in enumerate(s.values):
                if v is not None:
                    parts.append(
                        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{s.colour}">'
                        f"<title>{e(s.label)} {e(months[i])}: {e(y_format(v))}</title></circle>"
                    )
    for lx, row, item, colour in legend:
        ly = _H - 14 + 16 * row
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly + 9}" class="lg">{e(item)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _pct_axis(v: float) -> str:
    return f"{v * 100:.0f}%"


def _charts(rows: Sequence[dict[str, Any]]) -> list[str]:
    months = [r["month"] for r in rows]

    def col(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if r.get(key) is None else r[key] * scale for r in rows]

    blue, orange, green, purple = _COLOURS
    return [
        _svg_chart(
            "Enrollment and active-user rates vs benchmarks",
            months,
            [
                _Series("Enrollment rate", col("enrollment_rate"), blue),
                _Series("Active-user rate", col("active_user_rate"), orange),
            ],
            y_max=1.0,
            y_format=_pct_axis,
            bands=[
                _Band(0.60, 0.70, blue, "Enrollment benchmark 60–70%"),
                _Band(0.40, 0.50, orange, "Active benchmark 40–50%"),
            ],
        ),
        _svg_chart(
            "Messages",
            months,
            [
                _Series("Received from patients", col("patient_messages"), blue),
                _Series("Staff replies sent", col("staff_replies"), green),
            ],
            kind="bar",
        ),
        _svg_chart(
            "Appointments booked in the portal",
            months,
            [_Series("Portal booking share", col("portal_booking_rate"), blue)],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        _svg_chart(
            "Results viewed the same day",
            months,
            [
                _Series("Same-day viewing", col("same_day_view_rate"), green),
                _Series("Before staff contact", col("viewed_before_staff_contact_rate"), purple),
            ],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        _svg_chart(
            "Payments made in the portal",
            months,
            [_Series("Share of collections", col("portal_payment_share"), purple)],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        _svg_chart(
            "Inbound phone calls",
            months,
            [_Series("Inbound calls", col("inbound_calls"), orange)],
            kind="bar",
        ),
        _svg_chart(
            "Message response time (hours)",
            months,
            [
                _Series("Average (wall-clock hours)", col("avg_response_hours"), blue),
                _Series("Median business hours", col("median_response_business_hours"), green),
                _Series("90th pct business hours", col("p90_response_business_hours"), orange),
            ],
        ),
    ]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;
 color:#1b1f24;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#57606a;margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 12px}
.card .k{font-size:12px;color:#57606a}.card .v{font-size:22px;font-weight:600}
.card .d{font-size:12px;color:#57606a}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px}
.chart{width:100%;height:auto;border:1px solid #d0d7de;border-radius:8px;background:#fff}
.ct{font-size:14px;font-weight:600;fill:#1b1f24}.grid{stroke:#eaeef2;stroke-width:1}
.yl{font-size:11px;fill:#57606a;text-anchor:end}
.xl{font-size:11px;fill:#57606a;text-anchor:middle}
.lg{font-size:11px;fill:#1b1f24}ol{margin:0;padding-left:22px}
table{border-collapse:collapse;font-size:12px;margin-top:8px}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
"""


def _card(label: str, value: str, detail: str | None) -> str:
    e = html.escape
    return (
        f'<div class="card"><div class="k">{e(label)}</div><div class="v">{e(value)}</div>'
        f'<div class="d">{e(detail or "")}</div></div>'
    )


def render_html(trailing: Sequence[dict[str, Any]]) -> str:
    """One self-contained page: the latest month's dashboard and the trailing months' charts."""
    if not trailing:
        raise ValueError("no months to render")
    rows = list(trailing)
    c = rows[-1]
    previous = (
        rows[-2] if len(rows) > 1 and rows[-2]["month"] == previous_month(c["month"]) else None
    )
    e = html.escape

    def delta(key: str) -> str | None:
        change = _change(key, c, previous)
        return (
            None
            if change is None or previous is None
            else f"{change} vs {_month_name(previous['month'], with_year=False)}"
        )

    cards = [
        _card("Enrollment rate", _pct(c["enrollment_rate"]), delta("enrollment_rate")),
        _card("Active users", _pct(c["active_user_rate"]), delta("active_user_rate")),
        _card("New enrollments", _count(c["new_enrollments"]), delta("new_enrollments")),
        _card("Multi-feature users", _pct(c["multi_feature_rate"]), "of active users"),
        _card(
            "Messages",
            f"{_count(c['staff_replies'])} / {_count(c['patient_messages'])}",
            "sent / received",
        ),
        _card(
            "Portal bookings",
            _count(c["portal_bookings"]),
            f"{_pct(c['portal_booking_rate'])} of total",
        ),
        _card(
            "Results viewed",
            _count(c["results_viewed"]),
            f"{_pct(c['same_day_view_rate'])} same-day",
        ),
        _card(
            "Portal payments",
            _dollars(c["portal_payment_cents"]),
            f"{_pct(c['portal_payment_share'])} of collections",
        ),
        _card("Inbound calls", _count(c["inbound_calls"]), delta("inbound_calls")),
        _card(
            "Avg response time",
            _hours(c["avg_response_hours"]),
            f"{_pct(c['within_internal_target_rate'])} within same-day target",
        ),
        _card("Satisfaction (portal users)", _score(c["avg_satisfaction_portal_users"]), None),
        _card("App installs", _pct(c["app_install_rate"]), "of active users"),
    ]
    opportunities = key_opportunities(c) or [
        "Hold the gains: every tracked measure is at or above its target"
    ]
    table_columns = (
        ("enrollment_rate", "Enrolled"), ("active_user_rate", "Active"),
        ("new_enrollments", "New enrollments"), ("patient_messages", "Messages in"),
        ("portal_booking_rate", "Portal bookings"), ("same_day_view_rate", "Same-day views"),
        ("portal_payment_share", "Portal payments"), ("inbound_calls", "Inbound calls"),
        ("avg_response_hours", "Response hours"), ("sla_breaches", "SLA breaches"),
    )  # fmt: skip

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "n/a"
        if key in RATE_KEYS:
            return _pct(value)
        return _num(value) if isinstance(value, float) else f"{value:,}"

    head = "".join(f'<th title="{e(k)}">{e(label)}</th>' for k, label in table_columns)
    table = [f"<table><tr><th>Month</th>{head}</tr>"]
    for r in rows:
        cells = "".join(f"<td>{e(cell(k, r.get(k)))}</td>" for k, _ in table_columns)
        table.append(f"<tr><td>{e(r['month'])}</td>{cells}</tr>")
    table.append("</table>")
    title = f"Portal Performance - {_month_name(c['month'])}"
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)} — {e(c['practice_id'])}</title><style>{_CSS}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            f'<p class="sub">Practice {e(c["practice_id"])} · trailing {len(rows)} month(s): '
            f"{e(rows[0]['month'])} to {e(c['month'])}</p>",
            '<div class="cards">',
            *cards,
            "</div>",
            "<h2>Key Opportunities</h2><ol>",
            *(f"<li>{e(o)}</li>" for o in opportunities),
            "</ol>",
            '<h2>Trends</h2><div class="charts">',
            *_charts(rows),
            "</div>",
            "<h2>By month</h2>",
            *table,
            "</body></html>\n",
        ]
    )


def text_report(client: Client, practice: str, month: str) -> str:
    """The article's text dashboard for one practice-month, with changes from the month before."""
    current = fetch_month(client, practice, month)
    try:
        previous = fetch_month(client, practice, previous_month(month))
    except MonthNotFound:
        previous = None
    return render_text(current, previous)
