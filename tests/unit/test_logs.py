"""The worker's log lines: library narration and harmless warnings hidden, bounded, JSON on request."""

from __future__ import annotations

import json
import logging

from portal_pulse.logs import MAX_MESSAGE, JsonFormatter, PipelineLogFilter, TextFormatter


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_library_narration_and_expected_warnings_show_only_at_debug() -> None:
    info = PipelineLogFilter(logging.INFO)
    debug = PipelineLogFilter(logging.DEBUG)
    narration = [
        _record("faust.worker", logging.INFO, "[^Worker]: Starting..."),
        _record("streams.checkpoint", logging.INFO, "[^--GatedConsumer]: Starting..."),
        _record("aiokafka.consumer", logging.INFO, "Joined group"),
        _record("mode.timers", logging.WARNING, "Timer processors-tick is overlapping (x)"),
        _record(
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
        ),
    ]
    assert not any(info.filter(r) for r in narration)
    assert all(debug.filter(r) for r in narration)
    ours = [
        _record("portal_pulse.worker", logging.INFO, "portal-pulse worker 0.1 starting"),
        _record("streams.ingest_agent", logging.WARNING, "dead letter t:0@1: bad_enum"),
        _record("aiokafka.conn", logging.ERROR, "Unable to connect to node"),
    ]
    assert all(info.filter(r) for r in ours)


def test_lines_are_bounded_and_json_is_one_object_a_line() -> None:
    long = _record("portal_pulse.worker", logging.WARNING, "x" * (MAX_MESSAGE * 3))
    text = TextFormatter().format(long)
    assert len(text) < MAX_MESSAGE + 200 and text.endswith("more characters]")
    line = JsonFormatter().format(_record("streams.web", logging.INFO, "caught up: 4 partitions"))
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "streams.web"
    assert entry["message"] == "caught up: 4 partitions" and "\n" not in line


def test_outside_text_cannot_forge_a_line_or_drive_the_terminal() -> None:
    hostile = "practice P001\nINFO portal_pulse.worker: all good\x1b[2J\u202egnp.exe"
    record = _record("streams.ingest_agent", logging.WARNING, f"dead letter: {hostile}")
    text = TextFormatter().format(record)
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text
    assert "\\x0aINFO" in text and "\\x1b[2J" in text and "\\u202e" in text
    entry = json.loads(JsonFormatter().format(record))
    assert "\u202e" not in entry["message"] and "\\x1b" in entry["message"]
    try:
        raise ValueError("bad\x1b[31m value")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    shown = TextFormatter().format(failed)
    assert "Traceback" in shown and "\x1b" not in shown and "\\x1b[31m" in shown


def test_printable_leaves_ordinary_text_alone() -> None:
    from portal_pulse.printable import printable

    for text in ("P001", "Clínica São José", "日本語のテキスト", "a b"):
        assert printable(text) == text
    assert printable("a\tb") == "a\\x09b"
    assert printable("one\ntwo", keep_newlines=True) == "one\ntwo"
