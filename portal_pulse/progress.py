"""Progress bars for long runs (simulate, produce, replay), shown only on a terminal.

Library functions take an optional ``progress`` factory, ``progress(description, total)``, and
call ``update(n)`` every few thousand items, then ``close()``. The CLI passes ``terminal_progress``
when stdout and stderr are both terminals, and nothing otherwise: redirected output never holds
cursor escape codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = [
    "STEP",
    "Progress",
    "ProgressFactory",
    "count_lines",
    "progress_for_terminal",
    "terminal_progress",
]

STEP = 5_000  # items between updates: cheap enough to leave on in every loop


class Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> object: ...


ProgressFactory = Callable[[str, int | None], Progress]


def terminal_progress(description: str, total: int | None) -> Progress:
    """A tqdm bar on stderr: items done, items/s and, when the total is known, time left."""
    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        sized = size.columns > 0 and size.lines > 0
    except (OSError, ValueError):
        sized = False
    return tqdm(
        total=total,
        desc=description,
        unit=" events",
        unit_scale=True,
        leave=False,
        file=sys.stderr,
        # A terminal that reports no size (some pseudo-terminals) gets 80 × 24: tqdm would
        # otherwise draw a bar of width 0 and hide it below row 0.
        dynamic_ncols=sized,
        ncols=None if sized else 80,
        nrows=None if sized else 24,
        mininterval=0.2,
    )


def progress_for_terminal() -> ProgressFactory | None:
    """``terminal_progress`` when stdout and stderr are terminals (and TERM is not dumb)."""
    if os.environ.get("TERM") == "dumb":
        return None
    try:
        interactive = sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return None
    return terminal_progress if interactive else None


def count_lines(path: Path) -> int:
    """Lines in a file, read in large blocks (a 1 GB recording takes about a second)."""
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")
