"""Dashboard query times on a large simulated data set (default 50 practices × 2,000 × 12 months).

Builds the data set once with the simulator and the offline replay (several minutes), or reuses
an existing chDB path (migrating it: a path built before migration 0006 gets its rollup
backfilled), then times one practice-month as `dashboard` fetches it (`fetch_month`, a query of
its own for one month, portal_pulse/reports/practice_month.py) and as read from the view, one
practice's trailing twelve months (the HTML report), and all practices over all months. Each is
compared with migration 0002's query-time definition, recreated as
`reference_monthly_portal_performance` ("before"; see tests/reference_monthly.py). Runs take
turns, so all see the same machine load. Prints medians of repeated runs, then whether
`fetch_month` gives the view's rows and the view the reference's numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
ROLLUP_TABLES = (
    "rollup_months",
    "rollup_patient_years",
    "rollup_patient_firsts",
    "rollup_results",
    "rollup_sla",
)
FLOAT_MEANS = ("avg_response_business_hours", "avg_response_hours")
"""Means of Float64 columns: their last bits depend on summation order (threads, parts)."""


def timed(fns: Sequence[Callable[[], Any]], repeat: int) -> tuple[list[float], list[Any]]:
    """Median seconds of each of ``fns`` over ``repeat`` runs, taking turns so all see the same
    load, and each one's last result. One untimed run of each first warms the caches."""
    for fn in fns:
        fn()
    runs: list[list[float]] = [[] for _ in fns]
    results: list[Any] = [None for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            runs[i].append(time.perf_counter() - t0)
    return [statistics.median(r) for r in runs], results


def timed_pair(
    before: Callable[[], Any], after: Callable[[], Any], repeat: int
) -> tuple[float, float, Any, Any]:
    """``timed`` for two."""
    (b, a), (rb, ra) = timed([before, after], repeat)
    return b, a, rb, ra


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
    os.environ.setdefault("PORTAL_PULSE_PSEUDONYM_KEY", "benchmark-key-not-a-secret-32-bytes")
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
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="merge each rollup table into one part first (OPTIMIZE TABLE ... FINAL)",
    )
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
    if args.optimize:
        # The state background merges reach in a long-running worker. A fresh replay leaves
        # several parts per rollup table, which reads with FINAL merge at query time.
        t0 = time.monotonic()
        for table in ROLLUP_TABLES:
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        print(f"rollup tables merged into one part each in {time.monotonic() - t0:.1f}s")
    parts = client.query(
        "SELECT count() FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table IN {tables:Array(String)}",
        parameters={"tables": list(ROLLUP_TABLES)},
    ).result_rows[0][0]
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
        """The practice-month read from ``view``, as BI tools (and fetch_month before) do."""

        def fetch() -> Any:
            return client.query(
                f"SELECT * FROM {view} WHERE practice_id = 'P001' AND month = '{month}'"
            ).result_rows

        return fetch

    def trailing_of(view: str) -> Callable[[], Any]:
        def fetch() -> Any:
            with dashboard_view(view):
                return fetch_trailing(client, "P001", month)

        return fetch

    def every_of(view: str) -> Callable[[], Any]:
        return lambda: client.query(f"SELECT * FROM {view} ORDER BY practice_id, month")

    # fetch_month (what `dashboard` runs) computes the row with a query of its own for one
    # month; the view read for the same row is timed beside it.
    (one_before, one_after, one_view), _ = timed(
        [month_of(reference), lambda: fetch_month(client, "P001", month), month_of(VIEW)],
        args.repeat,
    )
    trailing = timed_pair(trailing_of(reference), trailing_of(VIEW), args.repeat)
    everything = timed_pair(every_of(reference), every_of(VIEW), max(3, args.repeat // 2))
    figures = {
        "before": [one_before, one_before, trailing[0], everything[0]],
        "after": [one_after, one_view, trailing[1], everything[1]],
    }
    results = {"before": everything[2].result_rows, "after": everything[3].result_rows}
    columns = list(everything[3].column_names)

    rows = len(results["after"])
    print(
        f"data set: {events:,} events, {args.practices} practices × {args.patients} patients "
        f"× {args.months} months ({rows} practice-months; {parts} parts in the "
        f"{len(ROLLUP_TABLES)} rollup tables); load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'median of repeated runs':46} {'before':>9} {'after':>9}")
    names = (
        f"one practice-month ({month}), fetch_month",
        "the same practice-month from the view",
        "one practice, trailing twelve months",
        "all practices, all months",
    )
    for i, name in enumerate(names):
        before, after = figures["before"][i], figures["after"][i]
        print(f"{name:46} {before * 1000:7.0f} ms {after * 1000:7.0f} ms  ({before / after:.1f}×)")

    # fetch_month against the view's rows, for every month of the practice timed.
    view_rows = {(r[0], r[1]): r for r in results["after"]}
    mismatched = 0
    for m in months:
        row = fetch_month(client, "P001", m)
        got = [tuple(row[c] for c in columns)]
        if differences(columns, got, [view_rows["P001", m]])[0]:
            mismatched += 1
    if mismatched:
        print(f"fetch_month: NO, {mismatched} of P001's {len(months)} months differ from the view")
        raise SystemExit(1)
    print(f"fetch_month: the view's row for each of P001's {len(months)} months")

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
