"""JSON Lines recordings: errors named by line and field, blank lines skipped, writer round trip."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.jsonl import LineError, iter_lines, read_jsonl, write_jsonl
from schemas.model import RawEvent
from schemas.validation import to_flat_json

GOOD_LOGIN = {
    "event_id": "ev-1",
    "event_type": "portal.login",
    "occurred_at": "2026-01-05T14:30:00Z",
    "practice_id": "practice-a",
    "patient_id": "MRN-1",
    "channel": "web",
}
GOOD_PAYMENT = {
    "event_id": "ev-2",
    "event_type": "payment.made",
    "occurred_at": "2026-01-05T15:00:00+01:00",
    "practice_id": "practice-a",
    "patient_id": "MRN-2",
    "payment_id": "pay-1",
    "amount_cents": 12_50,
    "currency": "USD",
    "channel": "portal",
}


def line(obj: Any) -> str:
    return json.dumps(obj) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_valid_lines_in_order(tmp_path: Path) -> None:
    items = list(read_jsonl(write(tmp_path, line(GOOD_LOGIN) + line(GOOD_PAYMENT))))
    assert [type(i) for i in items] == [RawEvent, RawEvent]
    assert [i.event_id for i in items] == ["ev-1", "ev-2"]
    assert items[1].details["amount_cents"] == 1250


def test_error_names_line_number_and_field(tmp_path: Path) -> None:
    bad = {**GOOD_PAYMENT, "event_id": "ev-3", "amount_cents": 0}
    text = line(GOOD_LOGIN) + line(GOOD_PAYMENT) + line(bad)
    items = list(read_jsonl(write(tmp_path, text)))
    error = items[2]
    assert isinstance(error, LineError)
    assert (error.line_no, error.reason, error.field) == (3, "non_positive_amount", "amount_cents")
    assert str(error).startswith("line 3, field amount_cents: ")
    assert "(non_positive_amount)" in str(error)
    assert error.raw == json.dumps(bad)  # the original text, for the dead-letter record


def test_missing_field_error_message(tmp_path: Path) -> None:
    bad = {k: v for k, v in GOOD_PAYMENT.items() if k != "currency"}
    (error,) = list(read_jsonl(write(tmp_path, line(bad))))
    assert isinstance(error, LineError)
    assert "line 1, field currency" in str(error)
    assert error.reason == "missing_field"


@pytest.mark.parametrize("text", ['{"event_id": "x",', "not json", "{'single': 'quotes'}", "[1, 2"])
def test_invalid_json_line(tmp_path: Path, text: str) -> None:
    items = list(read_jsonl(write(tmp_path, line(GOOD_LOGIN) + text + "\n" + line(GOOD_PAYMENT))))
    assert isinstance(items[0], RawEvent)
    error = items[1]
    assert isinstance(error, LineError)
    assert (error.line_no, error.reason, error.field) == (2, "invalid_json", None)
    assert str(error).startswith("line 2: not JSON")
    assert error.raw == text
    assert isinstance(items[2], RawEvent)  # reading goes on after a bad line


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    (error,) = list(read_jsonl(write(tmp_path, "[1, 2, 3]\n")))
    assert isinstance(error, LineError)
    assert (error.line_no, error.reason) == (1, "not_an_object")
    assert str(error).startswith("line 1: ")


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    bad = {**GOOD_LOGIN, "channel": "fax"}
    text = "\n" + line(GOOD_LOGIN) + "   \n\t\n" + line(bad) + "\n\n"
    items = list(read_jsonl(write(tmp_path, text)))
    assert len(items) == 2
    assert isinstance(items[0], RawEvent)
    assert isinstance(items[1], LineError)
    assert items[1].line_no == 5
    assert str(items[1]).startswith("line 5, field channel")


def test_empty_file(tmp_path: Path) -> None:
    assert list(read_jsonl(write(tmp_path, ""))) == []


def test_last_line_without_newline_and_crlf(tmp_path: Path) -> None:
    text = json.dumps(GOOD_LOGIN) + "\r\n" + json.dumps(GOOD_PAYMENT)
    items = list(read_jsonl(write(tmp_path, text)))
    assert [i.event_id for i in items if isinstance(i, RawEvent)] == ["ev-1", "ev-2"]


def test_iter_lines_yields_line_numbers() -> None:
    stream = io.StringIO("\n" + line(GOOD_LOGIN) + "oops\n")
    numbered = list(iter_lines(stream))
    assert [n for n, _ in numbered] == [2, 3]
    assert isinstance(numbered[0][1], RawEvent)
    assert isinstance(numbered[1][1], LineError)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    events = [e for e in read_jsonl(write(tmp_path, line(GOOD_LOGIN) + line(GOOD_PAYMENT)))]
    assert write_jsonl(path, iter(to_flat_json(e) for e in events)) == 2
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 2
    assert list(read_jsonl(path)) == events


def test_line_error_str_without_field() -> None:
    error = LineError(7, "invalid_json", None, "not JSON: Expecting value", "{")
    assert str(error) == "line 7: not JSON: Expecting value (invalid_json)"


def test_a_non_utf8_line_and_deep_nesting_are_single_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = (
        '{"event_id":"e1","event_type":"record.viewed","occurred_at":"2026-01-05T10:00:00Z",'
        '"practice_id":"P","patient_id":"x"}'
    )
    path.write_bytes(b"\xff\xfe not utf-8\n" + b"[" * 100_000 + b"\n" + good.encode() + b"\n")
    items = list(read_jsonl(path))
    assert [getattr(i, "reason", "ok") for i in items] == ["bad_encoding", "invalid_json", "ok"]
