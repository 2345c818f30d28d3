"""Monthly view query times on a large simulated data set (default 50 practices × 2,000 × 12 months).

Builds the data set once with the simulator and the offline replay (several minutes), or reuses
an existing chDB path (migrating it to this code's schema), then times, as the code it runs
reads them:

- one practice-month as `portal-pulse dashboard` fetches it (`fetch_month`, from the view);
- the same practice-month from `monthly_portal_performance` (the stored rows, migration 0010),
  as a BI tool reads it, and from `monthly_portal_performance_computed` (what a refresh runs);
- one practice's trailing twelve months (`fetch_trailing`, the HTML report);
- all practices × all months from the view and from the computing view (`SELECT *`);
- what keeping the stored rows costs: one refresh of one practice-month, of one practice from
  a middle month, of one practice's every month, and of everything; then the view's reads
  again with the parts those refreshes left.

Each read beside the same read of migration 0002's query-time definition, recreated as
`reference_monthly_portal_performance` (tests/reference_monthly.py). Runs take turns, so all
see the same machine load. Prints medians of wall time and of this process's CPU time (chDB runs
in the process: CPU moves less than wall time on a shared machine), then whether the stored rows
are the computing view's, `fetch_month` gives the view's rows and the view the reference's
numbers, and a last line of JSON.

Run it on two checkouts (say main and a branch) against copies of one chDB path to compare
code: a path migrated by newer code cannot go back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clickhouse_connect.driver.client import Client

from portal_pulse.replay import replay_file
from portal_pulse.reports.dashboard import fetch_month, fetch_trailing, previous_month
from portal_pulse.reports.monthly_rows import refresh_monthly_rows
from portal_pulse.settings import Settings
from portal_pulse.simulate import SimulationSpec, simulate_to_file
from sinks.client import connect
from sinks.migrate import migrate
from tests.reference_monthly import create_reference

VIEW = "monthly_portal_performance"
COMPUTED = "monthly_portal_performance_computed"
ROLLUP_TABLES = (
    "rollup_months",
    "rollup_patient_years",
    "rollup_patient_firsts",
    "rollup_results",
    "rollup_sla",
)
FLOAT_MEANS = ("avg_response_business_hours", "avg_response_hours")
"""Means of Float64 columns: their last bits depend on summation order (threads, parts)."""


def timed(
    fns: Sequence[Callable[[], Any]], repeat: int
) -> tuple[list[tuple[float, float]], list[Any]]:
    """(median wall seconds, median CPU seconds) of each of ``fns`` over ``repeat`` runs, taking
    turns so all see the same load, and each one's last result. One untimed run of each first
    warms the caches."""
    for fn in fns:
        fn()
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    results: list[Any] = [None for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            c0, t0 = time.process_time(), time.perf_counter()
            results[i] = fn()
            walls[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    return [
        (statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus, strict=True)
    ], results


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
        """The practice-month read from ``view``, as a BI tool reads it."""

        def fetch() -> Any:
            return client.query(
                f"SELECT * FROM {view} WHERE practice_id = 'P001' AND month = '{month}'"
            ).result_rows

        return fetch

    def trailing_of(view: str) -> Callable[[], Any]:
        """Twelve months of P001 from ``view``, as ``fetch_trailing`` asks the view for them."""
        first = previous_month(month, 11)

        def fetch() -> Any:
            return client.query(
                f"SELECT * FROM {view} WHERE practice_id = 'P001' "
                f"AND month >= '{first}' AND month <= '{month}' ORDER BY month"
            ).result_rows

        return fetch

    def every_of(view: str) -> Callable[[], Any]:
        return lambda: client.query(f"SELECT * FROM {view} ORDER BY practice_id, month")

    # Reference and this code's reads, taking turns; fetch_month is what `dashboard` runs.
    (one_ref, one_fetch, one_view, one_computed), _ = timed(
        [
            month_of(reference),
            lambda: fetch_month(client, "P001", month),
            month_of(VIEW),
            month_of(COMPUTED),
        ],
        args.repeat,
    )
    (trailing_ref, trailing_now), _ = timed(
        [trailing_of(reference), lambda: fetch_trailing(client, "P001", month)], args.repeat
    )
    (every_ref, every_view, every_computed), last = timed(
        [every_of(reference), every_of(VIEW), every_of(COMPUTED)], max(3, args.repeat // 2)
    )
    figures = {
        "one practice-month, fetch_month (dashboard)": (one_ref, one_fetch),
        "one practice-month from the view (BI)": (one_ref, one_view),
        "one practice-month, computing view": (one_ref, one_computed),
        "one practice, trailing twelve months": (trailing_ref, trailing_now),
        "all practices × all months from the view": (every_ref, every_view),
        "all practices × all months, computing view": (every_ref, every_computed),
    }
    results = {"before": last[0].result_rows, "after": last[1].result_rows}
    computed_rows = last[2].result_rows
    columns = list(last[1].column_names)

    # What keeping the stored rows costs: one refresh of each extent, taking turns.
    middle = months[len(months) // 2]
    refreshes = {
        "refresh one practice-month": lambda: refresh_monthly_rows(
            client, ["P001"], (month, month)
        ),
        f"refresh one practice from {middle}": lambda: refresh_monthly_rows(
            client, ["P001"], (middle, months[-1])
        ),
        "refresh one practice, every month": lambda: refresh_monthly_rows(client, ["P001"]),
        "refresh every practice": lambda: refresh_monthly_rows(client),
    }
    costs, _ = timed(list(refreshes.values()), args.repeat)
    stored_parts = client.query(
        "SELECT count() FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table = 'monthly_portal_performance_rows'"
    ).result_rows[0][0]
    (one_after, every_after), _ = timed([month_of(VIEW), every_of(VIEW)], args.repeat)
    refresh_figures = dict(zip(refreshes, costs, strict=True))
    refresh_figures[f"one practice-month from the view, {stored_parts} parts"] = one_after
    refresh_figures[f"all practices × months from the view, {stored_parts} parts"] = every_after

    rows = len(results["after"])
    load_average = os.getloadavg()[0]
    print(
        f"data set: {events:,} events, {args.practices} practices × {args.patients} patients "
        f"× {args.months} months ({rows} practice-months; {parts} parts in the "
        f"{len(ROLLUP_TABLES)} rollup tables); load average {load_average:.1f}"
    )
    print(
        f"{'median of repeated runs (' + month + ')':46} {'0002 reference':>16} "
        f"{'this code':>16}   (wall / CPU)"
    )
    for name, ((ref_wall, ref_cpu), (wall, cpu)) in figures.items():
        print(
            f"{name:46} {ref_wall * 1000:6.0f} / {ref_cpu * 1000:5.0f} ms "
            f"{wall * 1000:6.0f} / {cpu * 1000:5.0f} ms"
        )
    print(f"{'stored rows, after the reads above':46} {'':>16} {'wall / CPU':>16}")
    for name, (wall, cpu) in refresh_figures.items():
        print(f"{name:46} {'':>16} {wall * 1000:6.0f} / {cpu * 1000:5.0f} ms")

    # The stored rows against the computing view, and fetch_month against the stored rows.
    other, gap = differences(columns, results["after"], computed_rows)
    if other:
        print(f"stored rows: NO, {other} cells differ from the computing view")
        raise SystemExit(1)
    print(f"stored rows: the computing view's, every row (float means within {gap:.1e})")
    view_rows = {(r[0], r[1]): r for r in results["after"]}
    for m in months:
        row = fetch_month(client, "P001", m)
        if differences(columns, [tuple(row[c] for c in columns)], [view_rows["P001", m]])[0]:
            print(f"fetch_month: NO, {m} differs from the view")
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
    print(
        json.dumps(
            {
                "month": month,
                "load_average": round(load_average, 2),
                "parts": parts,
                "ms": {
                    name: {
                        "reference_wall": round(ref[0] * 1000, 1),
                        "reference_cpu": round(ref[1] * 1000, 1),
                        "wall": round(now[0] * 1000, 1),
                        "cpu": round(now[1] * 1000, 1),
                    }
                    for name, (ref, now) in figures.items()
                },
                "refresh_ms": {
                    name: {"wall": round(wall * 1000, 1), "cpu": round(cpu * 1000, 1)}
                    for name, (wall, cpu) in refresh_figures.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
