"""Self and total time per function from a py-spy raw (collapsed-stack) profile.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;... count``.
A function's *self* share is the samples where it is the innermost frame; its *total* share the
samples where it is anywhere on the stack (counted once per sample, so recursion does not
inflate it). ``run.py --profile`` prints this for the worker.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``module.py:func``: one name per function."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    parts = file.split("/")
    if "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    else:
        short = "/".join(parts[-2:])
    return f"{short}:{match['func']}"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        stack, count = match[1], int(match[2])
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            total_time[name] += count
    return total, self_time, total_time


def report(path: Path, top: int = 25) -> str:
    total, self_time, total_time = summarise(path)
    if not total:
        return f"{path}: no samples"
    lines = [f"{total:,} samples (GIL held) in {path}", "self %   total %   function"]
    for name, count in self_time.most_common(top):
        lines.append(f"{100 * count / total:6.1f}   {100 * total_time[name] / total:7.1f}   {name}")
    lines.append("by total time:")
    for name, count in total_time.most_common(top):
        lines.append(f"{100 * self_time[name] / total:6.1f}   {100 * count / total:7.1f}   {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="a py-spy --format raw file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(report(args.profile, args.top))


if __name__ == "__main__":
    main()
