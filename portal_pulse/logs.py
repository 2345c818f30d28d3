"""The worker's log lines: text or one JSON object per line, bounded, without library noise.

Faust, mode and aiokafka narrate every service start and stop at INFO; an operator wants the
pipeline's own lines (start, assignment, caught up, errors and retries, shutdown summary). Their
INFO lines show only at ``--loglevel debug``. A few warnings that are expected and harmless — a
tick timer overlapping under load, a group coordinator not yet elected on a fresh broker, a
heartbeat refused during a rebalance — are shown at debug level too.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from portal_pulse.printable import printable

__all__ = ["MAX_MESSAGE", "JsonFormatter", "PipelineLogFilter", "TextFormatter", "install"]
# Control characters in a message (a forged newline, an ANSI escape) are escaped: TextFormatter
# and JsonFormatter both pass it through ``printable``.

MAX_MESSAGE = 2000  # characters; no log line is unbounded

_LIBRARIES = ("faust", "mode", "aiokafka", "kafka", "librdkafka", "venusian", "aiohttp.access")
_HARMLESS = re.compile(
    r"Timer \S+ is overlapping"
    r"|GroupCoordinatorNotAvailable|Group Coordinator Request failed"
    r"|Heartbeat failed for group .* because it is rebalancing"
    r"|Topic .* is not available during auto-create initialization"
)


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}… [{len(text) - MAX_MESSAGE} more characters]"


class PipelineLogFilter(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.verbose = level <= logging.DEBUG

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        message = record.getMessage()
        # Faust's services narrate under the names of our subclasses too: "[^--Name]: Starting".
        library = record.name.startswith(_LIBRARIES) or message.startswith("[^")
        if library and record.levelno < logging.WARNING:
            return False
        return not _HARMLESS.search(message)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message may carry outside text (ids, headers): one log line stays one line.
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep_newlines=True)

    def format(self, record: logging.LogRecord) -> str:
        return _bounded(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _bounded(printable(record.getMessage())),
        }
        if record.exc_info:
            entry["error"] = _bounded(
                printable(self.formatException(record.exc_info), keep_newlines=True)
            )
        return json.dumps(entry, ensure_ascii=False)


def install(root: logging.Logger, level: int, log_format: str) -> None:
    """Give every handler of ``root`` our formatter and filter."""
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    for handler in root.handlers:
        handler.setFormatter(formatter)
        handler.addFilter(PipelineLogFilter(level))
