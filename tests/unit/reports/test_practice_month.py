"""The one-practice-month query's parameters and the arithmetic it leaves to Python.

That its rows equal the view's is checked in tests/unit/sinks/test_monthly_rollup.py (every
practice-month, every scenario); tests/unit/reports/test_metrics.py checks fetch_month's figures
against hand-counted ones.
"""

from __future__ import annotations

from datetime import date

import pytest
from clickhouse_connect.driver.client import Client

from portal_pulse.reports.dashboard import MonthNotFound, fetch_month
from portal_pulse.reports.practice_month import (
    _low_int64,
    _ratio,
    practice_month_parameters,
    query_practice_month,
)


def test_parameters_of_a_month() -> None:
    p = practice_month_parameters("P001", "2026-03", "Asia/Kolkata", 45)
    assert p["start"] == date(2026, 3, 1) and p["previous"] == date(2026, 2, 1)
    assert (p["year"], p["month_number"], p["k"]) == (2026, 3, 2)
    assert p["bit"] == 0b100 and p["upto"] == 0b111
    assert (p["zone"], p["lookback"]) == ("Asia/Kolkata", 45)


def test_january_follows_december_of_the_year_before() -> None:
    p = practice_month_parameters("P001", "2026-01", "UTC", 730)
    assert p["previous"] == date(2025, 12, 1)
    assert (p["k"], p["bit"], p["upto"]) == (0, 1, 1)
    december = practice_month_parameters("P001", "2025-12", "UTC", 730)
    assert (december["k"], december["bit"], december["upto"]) == (11, 2048, 4095)


def test_ratios_divide_as_clickhouse_does() -> None:
    assert _ratio(1, 3) == 1.0 / 3.0
    assert _ratio(0, 5) == 0.0
    assert _ratio(5, 0) is None
    assert _ratio(-2, 4) == -0.5  # phone volume down by half


def test_payments_are_the_low_64_bits_as_a_signed_int64() -> None:
    key = 0xDEADBEEF12345678
    assert _low_int64((key << 64) | 12_345) == 12_345
    assert _low_int64(((key << 64) | 2**63 - 1) + (key << 64) + 1) == -(2**63)  # wraps
    assert _low_int64((key << 64) | (2**64 - 100)) == -100  # a refund's negative amount
    assert _low_int64(0) == 0


@pytest.mark.parametrize("practice", ["O'Brien", "P\\001", "x' OR 1 = 1 --"])
def test_practice_ids_are_quoted(chdb_client: Client, practice: str) -> None:
    """Values are bound on the client: quotes and backslashes stay in the string."""
    assert query_practice_month(chdb_client, practice, "2026-01") is None
    with pytest.raises(MonthNotFound):
        fetch_month(chdb_client, practice, "2026-01")
