"""Rows and parameters through a worker's /query keep their Python types."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sinks.remote import (
    RemoteResult,
    decode_parameters,
    decode_rows,
    encode_parameters,
    encode_rows,
)


def test_rows_round_trip_with_their_types() -> None:
    rows = [
        (
            "P001",
            datetime(2026, 1, 2, 3, 4, 5, 678000),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            date(2026, 1, 31),
            Decimal("12.50"),
            None,
            [1, 2],
            {"a": 1},
            2.5,
        )
    ]
    assert decode_rows(encode_rows(rows)) == rows


def test_parameters_round_trip_by_name() -> None:
    params = {"practice": "P001", "since": datetime(2026, 1, 1, tzinfo=UTC), "n": 3}
    assert decode_parameters(encode_parameters(params)) == params


def test_a_remote_result_reads_like_a_query_result() -> None:
    result = RemoteResult(["kind", "n"], [("sla.breached", 2), ("sla.at_risk", 1)])
    assert result.first_row == ("sla.breached", 2)
    assert result.named_results() == [
        {"kind": "sla.breached", "n": 2},
        {"kind": "sla.at_risk", "n": 1},
    ]
