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
