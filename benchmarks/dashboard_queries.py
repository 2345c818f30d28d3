"""Dashboard query times on a large simulated data set (default 50 practices × 2,000 × 12 months).

Builds the data set once with the simulator and the offline replay (several minutes), or reuses
an existing chDB path (migrating it: a path built before migration 0006 gets its rollup
backfilled), then times the monthly view: one practice-month (what `dashboard` runs), one
practice's trailing twelve months (the HTML report), and all practices over all months. Each is
timed on the rollup-backed `monthly_portal_performance` ("after") and on migration 0002's
query-time definition, recreated as `reference_monthly_portal_performance` ("before"; see
tests/reference_monthly.py). Runs of the two alternate, so both see the same machine load. Prints
medians of repeated runs, then whether the two views give the same numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clickhouse_connect.driver.client import Client

from portal_pulse.replay import replay_file
from portal_pulse.reports import dashboard
from portal_pulse.reports.dashboard import fetch_month, fetch_trailing
from portal_pulse.settings import Settings
from portal_pulse.simulate import SimulationSpec, simulate_to_file
from sinks.client import connect
from sinks.migrate import migrate
from tests.reference_monthly import create_reference

VIEW = "monthly_portal_performance"
FLOAT_MEANS = ("avg_response_business_hours", "avg_response_hours")
"""Means of Float64 columns: their last bits depend on summation order (threads, parts)."""


def timed_pair(
    before: Callable[[], Any], after: Callable[[], Any], repeat: int
) -> tuple[float, float, Any, Any]:
    """Median seconds of each over ``repeat`` runs, alternating so both see the same load, and
    each one's last result. One untimed run of each first warms the caches."""
    before()
    after()
    runs: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for _ in range(repeat):
        for i, fn in enumerate((before, after)):
            t0 = time.perf_counter()
            results[i] = fn()
            runs[i].append(time.perf_counter() - t0)
    return statistics.median(runs[0]), statistics.median(runs[1]), results[0], results[1]


@contextmanager
def dashboard_view(name: str) -> Iterator[None]:
    """Point the dashboard's own fetch functions at ``name`` for a while."""
    saved = dashboard.VIEW
    dashboard.VIEW = name
    try:
        yield
    finally:
        dashboard.VIEW = saved


def load(client: Client, path: Path, args: argparse.Namespace) -> None:
    os.environ.setdefault("PORTAL_PULSE_PSEUDONYM_KEY", "benchmark-key")
    # A simulated year may run past today: accept it for this data set.
    os.environ.setdefault("PORTAL_PULSE_MAX_FUTURE_SKEW_SECONDS", str(400 * 86400))
    recording = path.parent / f"dashboard-{args.practices}x{args.patients}x{args.months}.jsonl"
    recording.parent.mkdir(parents=True, exist_ok=True)
    if not recording.exists():
        spec = SimulationSpec(
            practices=args.practices, patients=args.patients, months=args.months, seed=3
        )
        simulate_to_file(spec, recording)
    t0 = time.monotonic()
    summary = replay_file(Settings(), recording, client)
    print(f"loaded {summary.events:,} events by replay in {time.monotonic() - t0:.0f}s")


def differences(
    columns: list[str], after: list[tuple[Any, ...]], before: list[tuple[Any, ...]]
) -> tuple[int, float]:
    """(cells that differ outside the float means, largest relative gap in the float means)."""
    if [r[:2] for r in after] != [r[:2] for r in before]:
        return max(len(after), len(before)), math.inf
    other, gap = 0, 0.0
    for new, old in zip(after, before, strict=True):
        for column, x, y in zip(columns, new, old, strict=True):
            if column in FLOAT_MEANS and x is not None and y is not None:
                gap = max(gap, abs(x - y) / max(abs(x), abs(y), 1e-300))
            elif x != y or type(x) is not type(y):
                other += 1
    return other, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chdb", type=Path, default=Path("var/bench/chdb-dashboard"))
    parser.add_argument("--practices", type=int, default=50)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    path = args.chdb.resolve()
    client = connect(f"chdb://{path}")
    try:
        have = client.query("SELECT count() FROM events").result_rows[0][0]
    except Exception:
        have = 0
    if have:
        t0 = time.monotonic()
        if migrate(client):
            print(f"migrated (rollup backfilled) in {time.monotonic() - t0:.0f}s")
    else:
        load(client, path, args)
    reference = create_reference(client)
    events = client.query("SELECT count() FROM events").result_rows[0][0]
    months = [
        r[0]
        for r in client.query(
            f"SELECT DISTINCT month FROM {VIEW} WHERE practice_id = 'P001' ORDER BY month"
        ).result_rows
    ]
    month = months[-2] if len(months) > 1 else months[-1]

    def month_of(view: str) -> Callable[[], Any]:
        def fetch() -> Any:
            with dashboard_view(view):
                return fetch_month(client, "P001", month)

        return fetch

    def trailing_of(view: str) -> Callable[[], Any]:
        def fetch() -> Any:
            with dashboard_view(view):
                return fetch_trailing(client, "P001", month)

        return fetch

    def every_of(view: str) -> Callable[[], Any]:
        return lambda: client.query(f"SELECT * FROM {view} ORDER BY practice_id, month")

    one = timed_pair(month_of(reference), month_of(VIEW), args.repeat)
    trailing = timed_pair(trailing_of(reference), trailing_of(VIEW), args.repeat)
    everything = timed_pair(every_of(reference), every_of(VIEW), max(3, args.repeat // 2))
    figures = {
        "before": [one[0], trailing[0], everything[0]],
        "after": [one[1], trailing[1], everything[1]],
    }
    results = {"before": everything[2].result_rows, "after": everything[3].result_rows}
    columns = list(everything[3].column_names)

    rows = len(results["after"])
    print(
        f"data set: {events:,} events, {args.practices} practices × {args.patients} patients "
        f"× {args.months} months ({rows} practice-months)"
    )
    print(f"{'median of repeated runs':42} {'before':>9} {'after':>9}")
    names = (
        f"one practice-month ({month})",
        "one practice, trailing twelve months",
        "all practices, all months",
    )
    for i, name in enumerate(names):
        before, after = figures["before"][i], figures["after"][i]
        print(f"{name:42} {before * 1000:7.0f} ms {after * 1000:7.0f} ms  ({before / after:.1f}×)")

    other, gap = differences(columns, results["after"], results["before"])
    if other == 0 and gap == 0.0:
        print("same numbers: yes, every column of every row identical")
    elif other == 0:
        print(
            "same numbers: yes, every count, rate, share, median and percentile identical; "
            f"the two Float64 means ({', '.join(FLOAT_MEANS)}) within {gap:.1e} relative "
            "(summation order: the query-time view itself moves by as much between runs)"
        )
    else:
        print(f"same numbers: NO, {other} cells differ")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
