"""Dashboard query times on a large simulated data set (default 50 practices × 2,000 × 12 months).

Builds the data set once with the simulator and the offline replay (several minutes), or reuses
an existing chDB path, then times the monthly view: one practice-month (what `dashboard` runs),
one practice's trailing twelve months (the HTML report), and all practices over all months.
Prints medians of repeated runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal_pulse.replay import replay_file
from portal_pulse.reports.dashboard import fetch_month, fetch_trailing
from portal_pulse.settings import Settings
from portal_pulse.simulate import SimulationSpec, simulate_to_file
from sinks.client import connect


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


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
    have = 0
    try:
        have = client.query("SELECT count() FROM events").result_rows[0][0]
    except Exception:
        have = 0
    if not have:
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
    events = client.query("SELECT count() FROM events").result_rows[0][0]
    months = [
        r[0]
        for r in client.query(
            "SELECT DISTINCT month FROM monthly_portal_performance WHERE practice_id = 'P001' ORDER BY month"
        ).result_rows
    ]
    month = months[-2] if len(months) > 1 else months[-1]
    one = timed(lambda: fetch_month(client, "P001", month), args.repeat)
    trailing = timed(lambda: fetch_trailing(client, "P001", month), args.repeat)
    everything = timed(
        lambda: client.query("SELECT * FROM monthly_portal_performance").result_rows,
        max(3, args.repeat // 2),
    )
    rows = len(client.query("SELECT * FROM monthly_portal_performance").result_rows)
    print(f"data set: {events:,} events")
    print(f"one practice-month ({month}):           median {one * 1000:.0f} ms")
    print(f"one practice, trailing twelve months:     median {trailing * 1000:.0f} ms")
    print(f"all practices, all months ({rows} rows): median {everything * 1000:.0f} ms")


if __name__ == "__main__":
    main()
