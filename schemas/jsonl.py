"""JSON Lines recordings: each line checked like any other input, errors named by line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from schemas.model import RawEvent
from schemas.validation import InvalidEvent, validate_event

__all__ = ["LineError", "read_jsonl", "write_jsonl"]


@dataclass(frozen=True, slots=True)
class LineError:
    """A refused line: where it was, why, and its original text (for the dead-letter record)."""

    line_no: int
    reason: str
    field: str | None
    detail: str
    raw: str

    def __str__(self) -> str:
        where = f"line {self.line_no}" + (f", field {self.field}" if self.field else "")
        return f"{where}: {self.detail} ({self.reason})"


def iter_lines(stream: TextIO) -> Iterator[tuple[int, RawEvent | LineError]]:
    """Open the file with ``errors="surrogateescape"``: a non-UTF-8 line is then one bad line."""
    for line_no, line in enumerate(stream, start=1):
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes, kept by errors="surrogateescape"
            yield line_no, LineError(line_no, "bad_encoding", None, "line is not UTF-8", text)
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line_no, LineError(line_no, "invalid_json", None, f"not JSON: {exc.msg}", text)
            continue
        except (RecursionError, ValueError, MemoryError):
            yield (
                line_no,
                LineError(line_no, "invalid_json", None, "not JSON: nested too deep", text),
            )
            continue
        try:
            yield line_no, validate_event(obj)
        except InvalidEvent as exc:
            yield line_no, LineError(line_no, exc.reason, exc.field, exc.detail, text)


def read_jsonl(path: str | Path) -> Iterator[RawEvent | LineError]:
    """Yield each line's event or its error, in file order."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for _, item in iter_lines(fh):
            yield item


def write_jsonl(path: str | Path, objects: Iterator[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for obj in objects:
            fh.write(json.dumps(obj, separators=(",", ":")) + "\n")
            n += 1
    return n
