"""Rendering the dashboard: the article's text layout, JSON keys, one self-contained HTML page."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from portal_pulse.reports.dashboard import (
    METRIC_KEYS,
    key_opportunities,
    previous_month,
    render_html,
    render_json,
    render_text,
)


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
    assert "- Average Message Response Time: 4.2 hours" in lines
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
    assert "- Average Message Response Time: n/a" in text


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


CHARTS = 7


def test_html_is_self_contained_with_one_svg_per_chart() -> None:
    page = render_html(trailing())
    assert page.startswith("<!DOCTYPE html>")
    assert "Portal Performance - December 2026" in page
    assert len(re.findall(r"<svg\b", page)) == CHARTS
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    for title in (
        "Enrollment and active-user rates vs benchmarks", "Messages",
        "Appointments booked in the portal", "Results viewed the same day",
        "Payments made in the portal", "Inbound phone calls", "Message response time (hours)",
    ):  # fmt: skip
        assert f'aria-label="{title}"' in page
    assert "Enrollment benchmark 60–70%" in page and "Active benchmark 40–50%" in page
    assert page.count("<tr>") == 13  # header and twelve months


def test_html_escapes_and_handles_a_single_month() -> None:
    page = render_html([sample("2026-01", practice_id="<P&1>")])
    assert "&lt;P&amp;1&gt;" in page and "<P&1>" not in page
    assert len(re.findall(r"<svg\b", page)) == CHARTS


def test_html_needs_a_month() -> None:
    with pytest.raises(ValueError):
        render_html([])
