"""Rendering the dashboard: the article's text layout, JSON keys, one self-contained HTML page.

Presentation only: one response time headlined in business hours with the wall clock as a labelled
secondary figure, units on every figure, "no data" months never shown as zeros, ``Nov 2025`` month
labels, a footer with the generation time and zone, band legends drawn as bands.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from portal_pulse.errors import EXIT_NO_DATA, EXIT_USAGE, UserError
from portal_pulse.reports.dashboard import (
    METRIC_KEYS,
    BadMonth,
    MonthNotFound,
    check_month,
    footer_line,
    key_opportunities,
    month_label,
    month_range,
    previous_month,
    render_html,
    render_json,
    render_text,
    response_lines,
    with_gaps,
)

GENERATED = datetime(2026, 2, 3, 14, 5, tzinfo=UTC)


def sample(month: str, **overrides: Any) -> dict[str, Any]:
    """A plausible month, close to the article's sample dashboard."""
    row: dict[str, Any] = {
        "practice_id": "P001", "month": month,
        "unique_patients": 2000, "enrolled_patients": 1360, "enrollment_rate": 0.68,
        "new_enrollments": 124, "active_users": 612, "active_user_rate": 0.45,
        "multi_feature_users": 300, "multi_feature_rate": 0.49, "patient_messages": 892,
        "staff_replies": 876, "messages_per_active_user": 1.46, "portal_bookings": 234,
        "total_bookings": 807, "portal_booking_rate": 0.29, "results_viewed": 456,
        "same_day_view_rate": 0.82, "viewed_before_staff_contact_rate": 0.61,
        "portal_payment_cents": 2_345_000, "total_payment_cents": 13_027_778,
        "portal_payment_share": 0.18, "inbound_calls": 1500, "phone_volume_change": -0.12,
        "responses": 800, "avg_response_business_hours": 3.1, "median_response_business_hours": 2.5,
        "p90_response_business_hours": 7.9, "avg_response_hours": 4.2,
        "within_internal_target_rate": 0.93, "within_external_promise_rate": 0.99,
        "sla_breaches": 3, "avg_satisfaction_portal_users": 4.7, "app_install_rate": 0.34,
    }  # fmt: skip
    row.update(overrides)
    return row


def test_sample_covers_every_key() -> None:
    assert set(sample("2026-01")) == {"practice_id", "month", *METRIC_KEYS}


def test_text_reproduces_the_article_layout() -> None:
    current = sample("2026-01")
    previous = sample(
        "2025-12", enrollment_rate=0.65, active_user_rate=0.43, new_enrollments=100,
        inbound_calls=1705,
    )  # fmt: skip
    text = render_text(current, previous)
    lines = text.splitlines()
    assert lines[0] == "Portal Performance - January 2026"
    for section in ("Adoption", "Engagement", "Impact", "Key Opportunities"):
        assert section in lines
    assert "- Enrollment Rate: 68% (↑ 3 pp from December)" in lines
    assert "- Active Users: 45% (↑ 2 pp from December)" in lines
    assert "- New Enrollments: 124 (↑ 24% from December)" in lines
    assert "- Messages: 876 sent, 892 received" in lines
    assert "- Appointments Scheduled: 234 (29% of total)" in lines
    assert "- Results Viewed: 456 (82% same-day viewing)" in lines
    assert "- Payments Made: $23,450 (18% of total collections)" in lines
    assert "- Phone Volume: ↓ 12% vs December" in lines
    assert (
        "- Message Response Time: median 2.5 business hours, 99% within the practice's promise"
        in lines
    )
    assert "- Average Response Time, wall clock (nights and weekends included): 4.2 hours" in lines
    assert "- Patient Satisfaction (portal users): 4.7/5.0" in lines
    assert lines[lines.index("Key Opportunities") + 1] == (
        "1. Increase app installation (currently 34% of users)"
    )


def test_text_without_a_previous_month_or_values() -> None:
    current = sample(
        "2026-03", enrollment_rate=None, phone_volume_change=None, avg_response_hours=None
    )
    text = render_text(current, sample("2026-01"))  # not the month before: ignored
    assert "from" not in text.split("Engagement")[0]
    assert "- Enrollment Rate: n/a" in text
    assert "- Phone Volume: 1,500 inbound calls" in text
    assert "- Average Response Time, wall clock (nights and weekends included): n/a" in text
    assert "no data" not in text  # no zone given: the caller did not ask for the note


def test_the_headline_response_time_is_business_hours_the_wall_clock_secondary() -> None:
    lines = render_text(sample("2026-01")).splitlines()
    impact = lines[lines.index("Impact") + 1 : lines.index("Key Opportunities")]
    headline, secondary = impact[1], impact[2]
    assert headline.startswith("- Message Response Time: median 2.5 business hours")
    assert "99% within the practice's promise" in headline
    assert "wall clock" in secondary and secondary.endswith("4.2 hours")
    assert not any("Average Message Response Time" in line for line in lines)


def test_a_month_without_replies_says_so_instead_of_zero() -> None:
    quiet = sample(
        "2026-01", responses=0, avg_response_business_hours=None,
        median_response_business_hours=None, p90_response_business_hours=None,
        avg_response_hours=None, within_internal_target_rate=None,
        within_external_promise_rate=None,
    )  # fmt: skip
    headline, secondary = response_lines(quiet)
    assert headline == (
        "Message Response Time: n/a business hours (no replies to patient messages)"
    )
    assert secondary == "Average Response Time, wall clock: n/a"
    assert "0.0" not in headline + secondary


def test_footer_and_missing_previous_month_note() -> None:
    text = render_text(sample("2026-01"), timezone="America/Chicago", generated_at=GENERATED)
    lines = text.splitlines()
    assert lines[2] == "(December 2025: no data, so no changes shown)"
    assert lines[-1] == (
        "Generated 2026-02-03 08:05 CST · months and times in America/Chicago"
        " (the practice's time zone)"
    )
    with_previous = render_text(
        sample("2026-01"), sample("2025-12"), timezone="America/Chicago", generated_at=GENERATED
    )
    assert "no data" not in with_previous
    assert footer_line(None, None) is None
    assert footer_line(None, GENERATED) == "Generated 2026-02-03 14:05 UTC"


def test_month_labels_and_ranges() -> None:
    assert month_label("2025-11") == "Nov 2025"
    assert month_range("2025-11", "2026-02") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert month_range("2026-02", "2026-02") == ["2026-02"]
    assert check_month("2026-01") == "2026-01"


@pytest.mark.parametrize("bad", ["2026-1", "2026-13", "26-01", "January", ""])
def test_a_bad_month_is_a_usage_error(bad: str) -> None:
    with pytest.raises(BadMonth) as caught:
        check_month(bad)
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    assert caught.value.exit_code == EXIT_USAGE
    assert "YYYY-MM" in str(caught.value)


def test_month_not_found_is_a_no_data_error() -> None:
    error = MonthNotFound("practice P001 has no data for Mar 2026")
    assert isinstance(error, UserError) and isinstance(error, LookupError)
    assert error.exit_code == EXIT_NO_DATA


def test_downward_changes_and_no_change() -> None:
    text = render_text(
        sample("2026-02", enrollment_rate=0.60, active_user_rate=0.45, new_enrollments=93),
        sample("2026-01", enrollment_rate=0.625, active_user_rate=0.45, new_enrollments=124),
    )
    assert "Enrollment Rate: 60% (↓ 2.5 pp from January)" in text
    assert "Active Users: 45% (no change from January)" in text
    assert "New Enrollments: 93 (↓ 25% from January)" in text


def test_opportunities_are_the_largest_shortfalls() -> None:
    assert key_opportunities(sample("2026-01", enrollment_rate=0.30, app_install_rate=0.40)) == [
        "Grow portal enrollment (currently 30% of patients; benchmark 60–70%)",
        "Increase app installation (currently 40% of users)",
        "Promote online bill pay (currently 18% of collections)",
    ]
    everything_fine = sample(
        "2026-01", app_install_rate=0.9, portal_booking_rate=0.5, portal_payment_share=0.5
    )
    assert key_opportunities(everything_fine) == []
    assert "Hold the gains" in render_text(everything_fine)


def test_json_is_exactly_the_spec_keys() -> None:
    obj = json.loads(render_json({**sample("2026-01"), "extra": 1}))
    assert list(obj) == ["practice_id", "month", *METRIC_KEYS]


def trailing(n: int = 12) -> list[dict[str, Any]]:
    months = [previous_month("2026-12", k) for k in reversed(range(n))]
    rows = [
        sample(m, enrollment_rate=0.2 + 0.04 * i, active_user_rate=0.3 + 0.015 * i)
        for i, m in enumerate(months)
    ]
    rows[3]["same_day_view_rate"] = None  # a gap in one line
    return rows


CHARTS = 9


def svgs(page: str) -> dict[str, str]:
    """Each chart's markup by its aria-label."""
    return {
        m.group(1): m.group(0)
        for m in re.finditer(r'<svg\b[^>]*aria-label="([^"]*)".*?</svg>', page, re.DOTALL)
    }


def test_html_is_self_contained_with_one_svg_per_chart() -> None:
    page = render_html(trailing(), timezone="America/New_York", generated_at=GENERATED)
    assert page.startswith("<!DOCTYPE html>")
    assert "Portal Performance - December 2026" in page
    assert len(re.findall(r"<svg\b", page)) == CHARTS
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert set(svgs(page)) == {
        "Enrollment and active users vs benchmarks (% of patients)",
        "Messages (count per month)",
        "Message response time (business hours)",
        "Replies on time (% of replies)",
        "Average response time, wall clock (secondary; hours)",
        "Appointments booked in the portal (% of bookings)",
        "Results viewed (% of results)",
        "Payments made in the portal (% of collections)",
        "Inbound phone calls (count per month)",
    }
    assert "Enrollment benchmark 60–70%" in page and "Active benchmark 40–50%" in page
    assert page.count("<tr>") == 13  # header and twelve months
    assert "no data" not in page  # twelve months, all with data


def test_html_headlines_business_hours_and_never_mixes_clocks_on_one_axis() -> None:
    page = render_html(trailing(), generated_at=GENERATED)
    cards = re.findall(r'<div class="card[^"]*">(.*?)</div></div>', page)
    assert 'class="card headline"' in page
    first = html.unescape(re.sub(r"<[^>]+>", "|", cards[0]))
    assert "Message response (median, business hours)" in first and "2.5 h" in first
    assert "99% within the practice's promise" in first
    assert "wall-clock average 4.2 h" in first
    charts = svgs(page)
    business = charts["Message response time (business hours)"]
    wall = charts["Average response time, wall clock (secondary; hours)"]
    assert "business hours" in business and "wall-clock" not in business
    assert "Average, wall-clock hours" in wall and "business" not in wall
    assert "Avg response (wall-clock h)" in page and "Median response (business h)" in page


def test_html_month_labels_read_as_months() -> None:
    page = render_html(trailing(), generated_at=GENERATED)
    axis = re.findall(r'<text [^>]*class="xl[^"]*"[^>]*>([^<]*)</text>', page)
    assert axis[:12] == [month_label(previous_month("2026-12", k)) for k in reversed(range(12))]
    assert axis[0] == "Jan 2026" and axis[10] == "Nov 2026"
    table_months = re.findall(r"<tr><td>([^<]*)</td>", page)
    assert table_months[0] == "Jan 2026" and table_months[-1] == "Dec 2026"


def test_html_footer_names_generation_time_and_zone() -> None:
    page = render_html(trailing(), timezone="America/New_York", generated_at=GENERATED)
    footer = re.search(r"<footer>(.*?)</footer>", page).group(1)  # type: ignore[union-attr]
    assert footer == (
        "Generated 2026-02-03 09:05 EST · months and times in America/New_York"
        " (the practice&#x27;s time zone)"
    )
    assert "months in America/New_York" in page
    assert "<footer>Generated " in render_html(trailing())  # the time is always there


def test_html_band_legends_look_like_bands() -> None:
    chart = svgs(render_html(trailing(), generated_at=GENERATED))[
        "Enrollment and active users vs benchmarks (% of patients)"
    ]
    swatches = re.findall(r'<rect class="band-swatch"[^>]*/>', chart)
    assert len(swatches) == 2
    for swatch in swatches:  # pale, dashed-edged and wider than tall, like the band it names
        assert 'fill-opacity="0.18"' in swatch and "stroke-dasharray" in swatch
        assert 'width="20" height="10"' in swatch
    # the bands themselves: a pale area with dashed edges at the benchmark levels
    assert chart.count('fill-opacity="0.18"><title>') == 2
    assert chart.count('stroke-dasharray="3 2"/>') == 2 + 4  # two swatches, four band edges


def test_no_data_months_are_not_zeros() -> None:
    rows = trailing()
    gap = rows.pop(4)["month"]  # a month without any data
    rows[7]["inbound_calls"] = 0  # a real zero
    rows[7]["same_day_view_rate"] = None  # undefined in a month with data
    assert [r["month"] for r in with_gaps(rows)] == [r["month"] for r in trailing()]
    placeholder = with_gaps(rows)[4]
    assert placeholder["month"] == gap and not any(placeholder.get(k) for k in METRIC_KEYS)

    page = render_html(rows, generated_at=GENERATED)
    label = month_label(gap)
    assert f'<tr class="nodata"><td>{label}</td><td class="nodata" colspan="12">no data</td>' in (
        page
    )
    assert page.count("<tr") == 13  # still one row per month of the window
    zero_month = month_label(rows[7]["month"])
    assert re.search(rf"<tr><td>{zero_month}</td>(<td>[^<]*</td>){{7}}<td>0</td>", page)
    assert re.search(rf"<tr><td>{zero_month}</td>(<td>[^<]*</td>){{5}}<td>n/a</td>", page)
    calls = svgs(page)["Inbound phone calls (count per month)"]
    # the no-data month is a labelled grey column, and the legend says what grey means
    assert f"<title>{label}: no data</title>" in calls and ">no data</text>" in calls
    assert calls.count('class="nodata"') == 1
    # the zero is drawn (a hairline bar), the no-data month has no bar
    bars = re.findall(r'height="([\d.]+)" fill="#d9480f"><title>Inbound calls, ([^:]+):', calls)
    assert dict((m, float(h)) for h, m in bars)[zero_month] == 2.0
    assert label not in {m for _, m in bars}
    assert len(bars) == 11
    # a month with data but no replies: the response chart says n/a there, not "no data"
    rows[2] = {
        **rows[2],
        "median_response_business_hours": None,
        "p90_response_business_hours": None,
    }
    business = svgs(render_html(rows, generated_at=GENERATED))[
        "Message response time (business hours)"
    ]
    assert f"<title>{month_label(rows[2]['month'])}: n/a</title>" in business
    assert business.count(": n/a</title>") == 1


def test_html_escapes_and_handles_a_single_month() -> None:
    page = render_html([sample("2026-01", practice_id="<P&1>")])
    assert "&lt;P&amp;1&gt;" in page and "<P&1>" not in page
    assert len(re.findall(r"<svg\b", page)) == CHARTS
    assert "Jan 2026 (1 month)" in page


def test_html_needs_a_month() -> None:
    with pytest.raises(ValueError):
        render_html([])
