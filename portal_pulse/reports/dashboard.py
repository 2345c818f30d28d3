"""The monthly portal dashboard (SPEC §1, §4): read ``monthly_portal_performance``, render it.

ClickHouse computes every metric (the view, migrations 0002-0009: one definition, which BI tools
read too); this module only fetches the view's rows and lays them out: the article's text
dashboard, a JSON object with exactly the SPEC §4 keys, and one self-contained HTML page whose
charts are inline SVG drawn here, so it opens offline. Nothing here changes a number: presentation only.

Presentation rules (issue 10 §4):

- one response time is the headline: the median **business-hours** response and the share of
  replies within the practice's promise (what the practice promises its patients); the
  wall-clock average is kept as a labelled secondary figure, never on the same axis;
- every figure says its unit and clock (``business hours``, ``wall-clock hours``, ``%``);
- a month with no data ("no data") is never drawn or tabled as a zero, and an undefined figure in
  a month with data reads ``n/a``;
- month labels read ``Nov 2025``, and a footer gives the generation time and the practice's zone.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from portal_pulse.errors import EXIT_NO_DATA, EXIT_USAGE, UserError
from portal_pulse.reports.local_time import format_local, practice_timezone
from portal_pulse.reports.reads import ReadModel, reads_of

__all__ = [
    "METRIC_KEYS",
    "RATE_KEYS",
    "BadMonth",
    "MonthNotFound",
    "check_month",
    "dashboard_command",
    "fetch_month",
    "fetch_trailing",
    "key_opportunities",
    "previous_month",
    "render_html",
    "render_json",
    "render_text",
    "text_report",
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

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


class MonthNotFound(UserError, LookupError):
    """No row for the practice and month: no events for it, or the practice is unknown."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NO_DATA)


class BadMonth(UserError, ValueError):
    """A month that is not ``YYYY-MM``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def _check_month(month: str) -> tuple[int, int]:
    match = _MONTH.match(month)
    if not match:
        raise BadMonth(f"month must be YYYY-MM (e.g. 2026-01), got {month!r}")
    return int(match.group(1)), int(match.group(2))


def check_month(month: str) -> str:
    """``month`` if it is ``YYYY-MM``, else ``BadMonth`` (a ``UserError``)."""
    _check_month(month)
    return month


def previous_month(month: str, back: int = 1) -> str:
    year, mon = _check_month(month)
    index = year * 12 + mon - 1 - back
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _month_name(month: str, *, with_year: bool = True) -> str:
    year, mon = _check_month(month)
    return f"{_MONTH_NAMES[mon - 1]} {year}" if with_year else _MONTH_NAMES[mon - 1]


def month_label(month: str) -> str:
    """``2025-11`` → ``Nov 2025``: a month label that cannot be read as a day."""
    year, mon = _check_month(month)
    return f"{_MONTH_NAMES[mon - 1][:3]} {year}"


def month_range(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` (both ``YYYY-MM``), in order."""
    (y0, m0), (y1, m1) = _check_month(first), _check_month(last)
    start, end = y0 * 12 + m0 - 1, y1 * 12 + m1 - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(start, end + 1)]


def _clean(value: Any) -> Any:
    """Plain JSON-able numbers; a NaN (never expected) is shown as missing rather than 'NaN'."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fetch(reads: ReadModel, practice: str, first: str, last: str) -> list[dict[str, Any]]:
    columns = ("practice_id", "month", *METRIC_KEYS)
    return [{c: _clean(row[c]) for c in columns} for row in reads.months(practice, first, last)]


_KNOWN_PRACTICES_SHOWN = 10


def _why_no_row(reads: ReadModel, practice: str, month: str) -> str:
    """Why the view has no row: the practice is unknown, or that month has no events."""
    span = reads.month_span(practice)
    if not span.events:
        known = reads.practices_with_events(_KNOWN_PRACTICES_SHOWN + 1)
        if not known:
            return f"no data for practice {practice!r}: the database holds no events yet"
        more = ", …" if len(known) > _KNOWN_PRACTICES_SHOWN else ""
        return (
            f"no data for practice {practice!r} (practices with data: "
            + ", ".join(known[:_KNOWN_PRACTICES_SHOWN])
            + more
            + ")"
        )
    first, last = span.first, span.last
    if not first or not last:
        months = "no month yet"
    elif first == last:
        months = f"{month_label(first)} only"
    else:
        months = f"{month_label(first)} to {month_label(last)}"
    return f"practice {practice} has no data for {month_label(month)} (it has data for {months})"


def fetch_month(source: ReadModel | Client, practice: str, month: str) -> dict[str, Any]:
    """practice_id, month and every SPEC §4 key (numbers, or None where undefined): the view's
    row for the practice and month, read from the view as a BI tool reads it.

    ``MonthNotFound`` (a ``UserError``) says whether the practice is unknown or the month empty.
    """
    _check_month(month)
    reads = reads_of(source)
    row = reads.practice_month(practice, month)
    if row is None:
        raise MonthNotFound(_why_no_row(reads, practice, month))
    columns = ("practice_id", "month", *METRIC_KEYS)
    return {c: _clean(row[c]) for c in columns}


def fetch_trailing(
    source: ReadModel | Client, practice: str, month: str, n: int = 12
) -> list[dict[str, Any]]:
    """The months (oldest first) among the ``n`` ending at ``month`` that have data."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return _fetch(reads_of(source), practice, previous_month(month, n - 1), month)


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


def _hours(value: float | None, clock: str = "") -> str:
    """``2.5 business hours`` / ``12.8 wall-clock hours``: the unit always names its clock."""
    unit = f"{clock} hours" if clock else "hours"
    return "n/a" if value is None else f"{value:.1f} {unit}"


def _short_hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} h"


def response_lines(c: dict[str, Any]) -> tuple[str, str]:
    """(headline, secondary) response-time lines: business hours first, wall clock second."""
    if not c.get("responses"):
        return (
            "Message Response Time: n/a business hours (no replies to patient messages)",
            "Average Response Time, wall clock: n/a",
        )
    headline = (
        f"Message Response Time: median "
        f"{_hours(c['median_response_business_hours'], 'business')}, "
        f"{_pct(c['within_external_promise_rate'])} within the practice's promise"
    )
    secondary = (
        f"Average Response Time, wall clock (nights and weekends included): "
        f"{_hours(c['avg_response_hours'])}"
    )
    return headline, secondary


def footer_line(timezone: str | None, generated_at: datetime | None) -> str | None:
    """``Generated 2026-03-07 14:02 CST · months and times in America/Chicago``."""
    if timezone is None and generated_at is None:
        return None
    parts = []
    if generated_at is not None:
        when = format_local(generated_at, timezone) if timezone else _iso_utc(generated_at)
        parts.append(f"Generated {when}")
    if timezone is not None:
        parts.append(f"months and times in {timezone} (the practice's time zone)")
    return " · ".join(parts)


def _iso_utc(at: datetime) -> str:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M UTC")


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


def render_text(
    current: dict[str, Any],
    previous: dict[str, Any] | None = None,
    *,
    timezone: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The article's sample dashboard, filled from one month (and the one before, if any).

    With ``timezone`` or ``generated_at``, a footer line says when and in which zone; with
    ``timezone`` and no previous month, a line says that month had no data to compare with.
    """
    if previous is not None and previous.get("month") != previous_month(current["month"]):
        previous = None
    c = current

    def change(text: str, key: str) -> str:
        return _with_change(text, key, c, previous)

    prev_name = _month_name(previous["month"], with_year=False) if previous else None
    lines = [
        f"Portal Performance - {_month_name(c['month'])}",
        f"Practice: {c['practice_id']}",
    ]
    if previous is None and timezone is not None:
        lines.append(f"({_month_name(previous_month(c['month']))}: no data, so no changes shown)")
    lines += [
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
    headline, secondary = response_lines(c)
    lines += [
        f"- {headline}",
        f"- {secondary}",
        f"- Patient Satisfaction (portal users): {_score(c['avg_satisfaction_portal_users'])}",
        "Key Opportunities",
    ]
    opportunities = key_opportunities(c)
    if opportunities:
        lines += [f"{i}. {text}" for i, text in enumerate(opportunities, 1)]
    else:
        lines.append("1. Hold the gains: every tracked measure is at or above its target")
    footer = footer_line(timezone, generated_at)
    if footer:
        lines += ["", footer]
    return "\n".join(lines) + "\n"


def render_json(current: dict[str, Any]) -> str:
    """One object: practice_id, month and exactly the SPEC §4 keys."""
    obj = {"practice_id": current["practice_id"], "month": current["month"]}
    obj.update({key: current.get(key) for key in METRIC_KEYS})
    return json.dumps(obj, indent=2) + "\n"


# -- HTML and SVG ----------------------------------------------------------------------------------

_W = 560
_LEFT, _RIGHT = 56, 16
_PLOT_H = 170
_COLOURS = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c")
_NO_DATA_FILL, _NO_DATA_EDGE, _NO_DATA_TEXT = "#eef0f2", "#afb8c1", "#6e7781"
_NO_DATA = "_no_data"
"""Marks a placeholder row: a month in the window without any data (not a month of zeros)."""


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
    no_data: Sequence[bool] = (),
) -> str:
    """A small line or grouped-bar chart as an inline <svg>.

    A month flagged in ``no_data`` is a grey column labelled "no data"; a zero is drawn (a point
    on the baseline, a hairline bar); an undefined value in a month with data leaves a gap, marked
    "n/a" when no series has a value that month.
    Legend swatches look like what they stand for: a line with a point, a solid bar, a pale
    dashed-edged band, a grey no-data column.
    """
    e = html.escape
    plot_w = _W - _LEFT - _RIGHT
    missing = [bool(v) for v in no_data] + [False] * (len(months) - len(no_data))
    known = [v for s in series for v in s.values if v is not None]
    top = (
        y_max
        if y_max is not None
        else _nice_max(max([*known, *(b.high for b in bands)], default=0) * 1.1)
    )
    n = max(len(months), 1)
    slot = plot_w / n

    # Legend items flow left to right under the title and wrap onto more rows.
    items: list[tuple[str, str, str]] = [(kind, s.label, s.colour) for s in series]
    items += [("band", b.label, b.colour) for b in bands]
    if any(missing):
        items.append(("nodata", "no data", _NO_DATA_EDGE))
    legend: list[tuple[float, int, str, str, str]] = []
    lx, row = float(_LEFT), 0
    for swatch, label, colour in items:
        width = 34 + 6.6 * len(label)  # swatch, gap and a generous guess at the text
        if lx + width > _W - _RIGHT and lx > _LEFT:
            lx, row = float(_LEFT), row + 1
        legend.append((lx, row, swatch, label, colour))
        lx += width
    top_y = 40 + 16 * row + 8
    bottom_y = top_y + _PLOT_H
    rotate = slot < 52  # "Nov 2025" needs about 50 px at 11 px
    height = bottom_y + (48 if rotate else 26)

    def x(i: int) -> float:
        return _LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return top_y + _PLOT_H - max(0.0, min(v, top)) / top * _PLOT_H

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {_W} {height}" '
        f'width="{_W}" height="{height}" aria-label="{e(title)}">',
        f"<title>{e(title)}</title>",
        f'<text x="{_LEFT}" y="20" class="ct">{e(title)}</text>',
    ]
    for lx, row, swatch, label, colour in legend:
        ly = 30 + 16 * row
        if swatch == "line":
            parts.append(
                f'<line x1="{lx:.1f}" x2="{lx + 20:.1f}" y1="{ly + 5}" y2="{ly + 5}" '
                f'stroke="{colour}" stroke-width="2.5"/>'
                f'<circle cx="{lx + 10:.1f}" cy="{ly + 5}" r="3" fill="{colour}"/>'
            )
        elif swatch == "bar":
            parts.append(
                f'<rect x="{lx + 5:.1f}" y="{ly}" width="10" height="10" fill="{colour}"/>'
            )
        elif swatch == "band":
            parts.append(
                f'<rect class="band-swatch" x="{lx:.1f}" y="{ly}" width="20" height="10" '
                f'fill="{colour}" fill-opacity="0.18" stroke="{colour}" stroke-opacity="0.7" '
                f'stroke-dasharray="3 2"/>'
            )
        else:
            parts.append(
                f'<rect x="{lx:.1f}" y="{ly}" width="20" height="10" fill="{_NO_DATA_FILL}" '
                f'stroke="{_NO_DATA_EDGE}" stroke-dasharray="2 2"/>'
            )
        parts.append(f'<text x="{lx + 24:.1f}" y="{ly + 9}" class="lg">{e(label)}</text>')
    for i, gap in enumerate(missing):
        if gap:
            cx = x(i)
            parts.append(
                f'<rect class="nodata" x="{_LEFT + slot * i + 1:.1f}" y="{top_y}" '
                f'width="{slot - 2:.1f}" height="{_PLOT_H}" fill="{_NO_DATA_FILL}" '
                f'stroke="{_NO_DATA_EDGE}" stroke-dasharray="2 2">'
                f"<title>{e(month_label(months[i]))}: no data</title></rect>"
                f'<text x="{cx:.1f}" y="{top_y + _PLOT_H / 2:.1f}" class="nd" '
                f'transform="rotate(-90 {cx:.1f} {top_y + _PLOT_H / 2:.1f})">no data</text>'
            )
    for band in bands:
        parts.append(
            f'<rect x="{_LEFT}" y="{y(band.high):.1f}" width="{plot_w}" '
            f'height="{y(band.low) - y(band.high):.1f}" fill="{band.colour}" fill-opacity="0.18">'
            f"<title>{e(band.label)}</title></rect>"
        )
        for edge in (band.low, band.high):
            parts.append(
                f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(edge):.1f}" y2="{y(edge):.1f}" '
                f'stroke="{band.colour}" stroke-opacity="0.7" stroke-dasharray="3 2"/>'
            )
    for k in range(5):
        v = top * k / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" class="yl">{e(y_format(v))}</text>'
        )
    for i, month in enumerate(months):
        label = e(month_label(month))
        if rotate:
            lx_, ly_ = x(i) + 4, bottom_y + 14
            parts.append(
                f'<text x="{lx_:.1f}" y="{ly_}" class="xl xr" '
                f'transform="rotate(-35 {lx_:.1f} {ly_})">{label}</text>'
            )
        else:
            parts.append(f'<text x="{x(i):.1f}" y="{bottom_y + 16}" class="xl">{label}</text>')

    for i in range(len(months)):
        if not missing[i] and series and all(s.values[i] is None for s in series):
            # data that month, but this figure is undefined (e.g. no replies): say so
            parts.append(
                f'<text x="{x(i):.1f}" y="{bottom_y - 6}" class="nd">n/a'
                f"<title>{e(month_label(months[i]))}: n/a</title></text>"
            )

    def tip(s: _Series, i: int, v: float) -> str:
        return f"<title>{e(s.label)}, {e(month_label(months[i]))}: {e(y_format(v))}</title>"

    if kind == "bar":
        width = slot * 0.8 / max(len(series), 1)
        for j, s in enumerate(series):
            for i, v in enumerate(s.values):
                if v is None:
                    continue
                bx = _LEFT + slot * i + slot * 0.1 + width * j
                bar_h = max(bottom_y - y(v), 2.0)  # a zero is a hairline, not nothing
                parts.append(
                    f'<rect x="{bx:.1f}" y="{bottom_y - bar_h:.1f}" width="{width:.1f}" '
                    f'height="{bar_h:.1f}" fill="{s.colour}">{tip(s, i, v)}</rect>'
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
                        f"{tip(s, i, v)}</circle>"
                    )
    parts.append("</svg>")
    return "".join(parts)


def _pct_axis(v: float) -> str:
    return f"{v * 100:.0f}%"


def _hours_axis(v: float) -> str:
    return f"{_num(v)} h"


def _charts(rows: Sequence[dict[str, Any]]) -> list[str]:
    months = [r["month"] for r in rows]
    gaps = [bool(r.get(_NO_DATA)) for r in rows]

    def col(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if r.get(key) is None else r[key] * scale for r in rows]

    def chart(title: str, series: list[_Series], **kw: Any) -> str:
        return _svg_chart(title, months, series, no_data=gaps, **kw)

    blue, orange, green, purple = _COLOURS
    return [
        chart(
            "Enrollment and active users vs benchmarks (% of patients)",
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
        chart(
            "Messages (count per month)",
            [
                _Series("Received from patients", col("patient_messages"), blue),
                _Series("Staff replies sent", col("staff_replies"), green),
            ],
            kind="bar",
        ),
        chart(
            "Message response time (business hours)",
            [
                _Series("Median, business hours", col("median_response_business_hours"), green),
                _Series(
                    "90th percentile, business hours", col("p90_response_business_hours"), orange
                ),
            ],
            y_format=_hours_axis,
        ),
        chart(
            "Replies on time (% of replies)",
            [
                _Series(
                    "Within the practice's promise", col("within_external_promise_rate"), green
                ),
                _Series("Within the same-day target", col("within_internal_target_rate"), blue),
            ],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        chart(
            "Average response time, wall clock (secondary; hours)",
            [_Series("Average, wall-clock hours", col("avg_response_hours"), purple)],
            y_format=_hours_axis,
        ),
        chart(
            "Appointments booked in the portal (% of bookings)",
            [_Series("Portal booking share", col("portal_booking_rate"), blue)],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        chart(
            "Results viewed (% of results)",
            [
                _Series("Same-day viewing", col("same_day_view_rate"), green),
                _Series("Before staff contact", col("viewed_before_staff_contact_rate"), purple),
            ],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        chart(
            "Payments made in the portal (% of collections)",
            [_Series("Share of collections", col("portal_payment_share"), purple)],
            y_max=1.0,
            y_format=_pct_axis,
        ),
        chart(
            "Inbound phone calls (count per month)",
            [_Series("Inbound calls", col("inbound_calls"), orange)],
            kind="bar",
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
.card.headline{border-color:#2b8a3e;border-width:2px}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px}
.chart{width:100%;height:auto;border:1px solid #d0d7de;border-radius:8px;background:#fff}
.ct{font-size:14px;font-weight:600;fill:#1b1f24}.grid{stroke:#eaeef2;stroke-width:1}
.yl{font-size:11px;fill:#57606a;text-anchor:end}
.xl{font-size:11px;fill:#57606a;text-anchor:middle}.xr{text-anchor:end}
.nd{font-size:10px;fill:#6e7781;text-anchor:middle}
.lg{font-size:11px;fill:#1b1f24}ol{margin:0;padding-left:22px}
table{border-collapse:collapse;font-size:12px;margin-top:8px}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
tr.nodata td{color:#6e7781;font-style:italic;background:#f6f8fa}
td.nodata{text-align:center}
footer{margin-top:22px;padding-top:8px;border-top:1px solid #d0d7de;color:#57606a;font-size:12px}
"""


def _card(label: str, value: str, detail: str | None, *, headline: bool = False) -> str:
    e = html.escape
    cls = "card headline" if headline else "card"
    return (
        f'<div class="{cls}"><div class="k">{e(label)}</div><div class="v">{e(value)}</div>'
        f'<div class="d">{e(detail or "")}</div></div>'
    )


def with_gaps(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for every month from the first to the last, a placeholder where a month has none.

    A placeholder holds ``practice_id``, ``month`` and a no-data mark; every metric is missing,
    so it can never be mistaken for a month of zeros.
    """
    if not rows:
        return []
    by_month = {r["month"]: r for r in rows}
    practice = rows[-1]["practice_id"]
    return [
        by_month.get(m) or {"practice_id": practice, "month": m, _NO_DATA: True}
        for m in month_range(rows[0]["month"], rows[-1]["month"])
    ]


_TABLE_COLUMNS = (
    ("enrollment_rate", "Enrolled"), ("active_user_rate", "Active"),
    ("new_enrollments", "New enrollments"), ("patient_messages", "Messages in"),
    ("portal_booking_rate", "Portal bookings"), ("same_day_view_rate", "Same-day views"),
    ("portal_payment_share", "Portal payments"), ("inbound_calls", "Inbound calls"),
    ("median_response_business_hours", "Median response (business h)"),
    ("within_external_promise_rate", "Within promise"),
    ("avg_response_hours", "Avg response (wall-clock h)"), ("sla_breaches", "SLA breaches"),
)  # fmt: skip


def render_html(
    trailing: Sequence[dict[str, Any]],
    *,
    timezone: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """One self-contained page: the latest month's dashboard and the trailing months' charts.

    The months run from the first given to the last without holes: a month with no row is shown
    as "no data". The footer gives ``generated_at`` (default: now) and ``timezone``.
    """
    if not trailing:
        raise ValueError("no months to render")
    rows = with_gaps(trailing)
    c = rows[-1]
    previous = rows[-2] if len(rows) > 1 and not rows[-2].get(_NO_DATA) else None
    e = html.escape

    def delta(key: str) -> str | None:
        if previous is None:
            return None
        change = _change(key, c, previous)
        return None if change is None else f"{change} vs {month_label(previous['month'])}"

    if c.get("responses"):
        response_value = _short_hours(c["median_response_business_hours"])
        response_detail = (
            f"{_pct(c['within_external_promise_rate'])} within the practice's promise · "
            f"wall-clock average {_short_hours(c['avg_response_hours'])}"
        )
    else:
        response_value, response_detail = "n/a", "no replies to patient messages this month"
    cards = [
        _card(
            "Message response (median, business hours)",
            response_value,
            response_detail,
            headline=True,
        ),
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
        _card("Satisfaction (portal users)", _score(c["avg_satisfaction_portal_users"]), None),
        _card("App installs", _pct(c["app_install_rate"]), "of active users"),
    ]
    opportunities = key_opportunities(c) or [
        "Hold the gains: every tracked measure is at or above its target"
    ]

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "n/a"
        if key in RATE_KEYS:
            return _pct(value)
        return _num(value) if isinstance(value, float) else f"{value:,}"

    head = "".join(f'<th title="{e(k)}">{e(label)}</th>' for k, label in _TABLE_COLUMNS)
    table = [f"<table><tr><th>Month</th>{head}</tr>"]
    for r in rows:
        name = e(month_label(r["month"]))
        if r.get(_NO_DATA):
            table.append(
                f'<tr class="nodata"><td>{name}</td>'
                f'<td class="nodata" colspan="{len(_TABLE_COLUMNS)}">no data</td></tr>'
            )
            continue
        cells = "".join(f"<td>{e(cell(k, r.get(k)))}</td>" for k, _ in _TABLE_COLUMNS)
        table.append(f"<tr><td>{name}</td>{cells}</tr>")
    table.append("</table>")
    empty = sum(1 for r in rows if r.get(_NO_DATA))
    span = (
        f"{month_label(rows[0]['month'])} to {month_label(c['month'])}"
        if len(rows) > 1
        else month_label(c["month"])
    )
    span += f" ({len(rows)} month{'s' if len(rows) != 1 else ''}"
    span += f", {empty} without data)" if empty else ")"
    zone_note = f" · months in {timezone}" if timezone else ""
    footer = footer_line(timezone, generated_at or datetime.now(UTC))
    title = f"Portal Performance - {_month_name(c['month'])}"
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)} — {e(c['practice_id'])}</title><style>{_CSS}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            f'<p class="sub">Practice {e(c["practice_id"])} · {e(span)}{e(zone_note)}</p>',
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
            f"<footer>{e(footer or '')}</footer>",
            "</body></html>\n",
        ]
    )


def text_report(
    source: ReadModel | Client,
    practice: str,
    month: str,
    *,
    timezone: str | Callable[[], str] | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The article's text dashboard for one practice-month, with changes from the month before.

    The footer names ``generated_at`` (default: now) and the practice's zone (``timezone`` if a
    zone name, else looked up, a callable ``timezone`` being the fallback).
    """
    reads = reads_of(source)
    current = fetch_month(reads, practice, month)
    try:
        previous = fetch_month(reads, practice, previous_month(month))
    except MonthNotFound:
        previous = None
    zone = timezone if isinstance(timezone, str) else practice_timezone(reads, practice, timezone)
    return render_text(
        current, previous, timezone=zone, generated_at=generated_at or datetime.now(UTC)
    )


def dashboard_command(
    source: ReadModel | Client,
    practice: str,
    month: str,
    fmt: str,
    *,
    timezone: str | Callable[[], str] | None = None,
    generated_at: datetime | None = None,
    months: int = 12,
) -> str:
    """What ``portal-pulse dashboard`` prints; ``UserError`` for a bad month or one without data."""
    check_month(month)
    reads = reads_of(source)
    current = fetch_month(reads, practice, month)
    if fmt == "json":
        return render_json(current)
    if fmt == "html":
        zone = (
            timezone if isinstance(timezone, str) else practice_timezone(reads, practice, timezone)
        )
        return render_html(
            fetch_trailing(reads, practice, month, months),
            timezone=zone,
            generated_at=generated_at,
        )
    if fmt == "text":
        return text_report(reads, practice, month, timezone=timezone, generated_at=generated_at)
    raise UserError(f"unknown format {fmt!r}: use text, json or html")
