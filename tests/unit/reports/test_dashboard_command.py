"""``portal-pulse dashboard`` on chDB: clear errors for an unknown practice, an empty month or a
bad month; the practice's zone in the footers; the JSON numbers untouched by presentation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.domain.practices import Practices
from portal_pulse.errors import EXIT_NO_DATA, EXIT_USAGE, UserError
from portal_pulse.reports.dashboard import METRIC_KEYS, dashboard_command, fetch_month
from portal_pulse.reports.practices_sync import sync_practices
from schemas.model import CleanEvent
from sinks.rows import EVENT_COLUMNS, event_row

GENERATED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def practice(chdb_client: Client) -> str:
    """A London practice with logins in January and March 2026 (none in February)."""
    p = f"dash-{uuid.uuid4().hex[:8]}"
    logins = [
        CleanEvent(uuid.uuid4().hex, "portal.login", at, p, f"{n:032x}", {"channel": "web"})
        for n, at in enumerate(
            [
                datetime(2026, 1, 5, 10, tzinfo=UTC),
                datetime(2026, 1, 6, 10, tzinfo=UTC),
                datetime(2026, 3, 3, 10, tzinfo=UTC),
            ]
        )
    ]
    chdb_client.insert("events", [event_row(e) for e in logins], column_names=list(EVENT_COLUMNS))
    sync_practices(
        chdb_client, Practices.from_mapping({"practices": {p: {"timezone": "Europe/London"}}})
    )
    return p


def test_text_has_the_zone_and_generation_time(chdb_client: Client, practice: str) -> None:
    text = dashboard_command(chdb_client, practice, "2026-03", "text", generated_at=GENERATED)
    lines = text.splitlines()
    assert lines[0] == "Portal Performance - March 2026"
    assert lines[2] == "(February 2026: no data, so no changes shown)"
    assert lines[-1] == (
        "Generated 2026-03-02 12:00 GMT · months and times in Europe/London"
        " (the practice's time zone)"
    )
    assert "- Message Response Time: n/a business hours (no replies to patient messages)" in lines


def test_html_shows_the_empty_month_as_no_data(chdb_client: Client, practice: str) -> None:
    page = dashboard_command(chdb_client, practice, "2026-03", "html", generated_at=GENERATED)
    assert '<tr class="nodata"><td>Feb 2026</td>' in page
    assert "Jan 2026 to Mar 2026 (3 months, 1 without data)" in page
    assert "<footer>Generated 2026-03-02 12:00 GMT · months and times in Europe/London" in page


def test_json_is_the_views_row_unchanged(chdb_client: Client, practice: str) -> None:
    obj = json.loads(dashboard_command(chdb_client, practice, "2026-01", "json"))
    assert obj == {k: v for k, v in fetch_month(chdb_client, practice, "2026-01").items()}
    assert list(obj) == ["practice_id", "month", *METRIC_KEYS]
    assert obj["active_users"] == 2


def test_a_month_without_data_names_the_months_with_data(
    chdb_client: Client, practice: str
) -> None:
    for fmt in ("text", "json", "html"):
        with pytest.raises(UserError) as caught:
            dashboard_command(chdb_client, practice, "2026-02", fmt)
        assert caught.value.exit_code == EXIT_NO_DATA
        assert str(caught.value) == (
            f"practice {practice} has no data for Feb 2026 (it has data for Jan 2026 to Mar 2026)"
        )


def test_an_unknown_practice_names_the_known_ones(chdb_client: Client, practice: str) -> None:
    with pytest.raises(UserError) as caught:
        dashboard_command(chdb_client, "no-such-practice", "2026-01", "text")
    assert caught.value.exit_code == EXIT_NO_DATA
    message = str(caught.value)
    assert message.startswith("no data for practice 'no-such-practice' (practices with data: ")
    assert "\n" not in message


def test_a_bad_month_or_format_is_a_usage_error(chdb_client: Client, practice: str) -> None:
    with pytest.raises(UserError) as caught:
        dashboard_command(chdb_client, practice, "2026-3", "text")
    assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(UserError, match="unknown format"):
        dashboard_command(chdb_client, practice, "2026-03", "pdf")
