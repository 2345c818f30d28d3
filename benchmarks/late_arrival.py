"""Late and out-of-order arrival end to end (issue #20): a recording produced in a realistic
arrival order, one worker run to idle, compared with `replay` of the same events.

Prints, per run: events, the worker's wall time, standing alerts and response facts equal to the
replay's (and how many differ), monthly metrics equal, alerts withdrawn by kind, corrections the
worker logged by kind and action, and late events by outcome.

    python benchmarks/late_arrival.py [--patients 400] [--months 3] [--holds 60,0]

Uses KAFKA_BOOTSTRAP_SERVERS, else the native broker on 127.0.0.1:19092 (`make broker-start`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal_pulse.simulate import SimulationSpec, realistic_order, simulate

KEY = "late-arrival-benchmark-key-0123456789abcdef"
STANDING_ALERTS = (
    "SELECT alert_id, kind, subject_id, category, staff_pool, due_at, resolved_at, "
    "response_business_minutes FROM alerts FINAL WHERE withdrawn_at IS NULL ORDER BY alert_id"
)
STANDING_FACTS = (
    "SELECT response_id, thread_id, clock_started_at, replied_at, messages_answered, "
    "response_business_minutes, response_wall_minutes, met_internal_target, met_external_promise "
    "FROM message_responses FINAL WHERE withdrawn_at IS NULL ORDER BY response_id"
)
WITHDRAWN = "SELECT kind, count() FROM alerts FINAL WHERE withdrawn_at IS NOT NULL GROUP BY kind"
MONTHLY = "SELECT * FROM monthly_portal_performance ORDER BY practice_id, month"
CORRECTION = re.compile(r"(alert (\S+)|response fact) \S+ (withdrawn|raised late) by late event")


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "portal_pulse.cli", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"portal-pulse {args[0]} failed: {result.stderr[-2000:]}")
    return result


def query(path: Path, sqls: list[str]) -> list[list[list[object]]]:
    script = (
        "import json, sys\nfrom sinks.client import connect\nc = connect('chdb://' + sys.argv[1])\n"
        "print(json.dumps([[list(r) for r in c.query(q).result_rows] for q in "
        "json.loads(sys.stdin.read())], default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], input=json.dumps(sqls),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def rounded(rows: list[list[object]]) -> list[list[object]]:
    return [[round(v, 9) if isinstance(v, float) else v for v in row] for row in rows]


def run(recording: Path, practices: Path, root: Path, hold: float, bootstrap: str) -> dict:
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PORTAL_PULSE_TOPIC_PREFIX": f"late{tag}",
        "PORTAL_PULSE_APP_ID": f"late-{tag}",
        "PORTAL_PULSE_DATA_DIR": str(root / tag),
        "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{root / tag / 'chdb'}",
        "PORTAL_PULSE_PSEUDONYM_KEY": KEY,
        "PORTAL_PULSE_PRACTICES_FILE": str(practices),
        "PORTAL_PULSE_WEB_PORT": "0",
        "PORTAL_PULSE_SLA_ALERT_HOLD_SECONDS": str(hold),
        "PORTAL_PULSE_FOLLOWUP_ALERT_HOLD_SECONDS": str(hold),
    }
    cli(env, "produce", str(recording))
    t0 = time.monotonic()
    worker = cli(env, "worker", "--exit-when-idle", "3", "--loglevel", "info")
    seconds = time.monotonic() - t0
    replay_db = root / tag / "replay"
    cli(env, "replay", str(recording), "--config", str(practices), "--clickhouse",
        f"chdb://{replay_db}")  # fmt: skip
    queries = [STANDING_ALERTS, STANDING_FACTS, MONTHLY, WITHDRAWN]
    live, offline = query(root / tag / "chdb", queries), query(replay_db, queries)
    corrections = Counter(
        (m.group(2) or "response", m.group(3)) for m in CORRECTION.finditer(worker.stderr)
    )
    missing = {tuple(map(str, r)) for r in offline[0]} - {tuple(map(str, r)) for r in live[0]}
    extra = {tuple(map(str, r)) for r in live[0]} - {tuple(map(str, r)) for r in offline[0]}
    return {
        "hold_seconds": hold,
        "worker_seconds": round(seconds, 1),
        "standing_alerts": [len(live[0]), len(offline[0])],
        "alerts_missing": len(missing),
        "alerts_extra": len(extra),
        "facts_equal": live[1] == offline[1],
        "facts": [len(live[1]), len(offline[1])],
        "monthly_rows_equal": sum(
            a == b for a, b in zip(rounded(live[2]), rounded(offline[2]), strict=False)
        ),
        "monthly_rows": len(offline[2]),
        "withdrawn_by_kind": dict(sorted((k, n) for k, n in live[3])),
        "corrections_logged": {f"{k} {a}": n for (k, a), n in sorted(corrections.items())},
        "late_events": next(
            (
                line.split("late events: ", 1)[1]
                for line in worker.stderr.splitlines()
                if "late events: " in line
            ),
            "",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=3)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holds", default="60,0", help="hold seconds to run with, comma-separated")
    parser.add_argument(
        "--arrival", default="realistic", help="realistic | portal-jitter | ordered"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    spec = SimulationSpec(
        practices=args.practices, patients=args.patients, months=args.months, seed=args.seed
    )
    objects = list(simulate(spec))
    if args.arrival != "ordered":
        objects = realistic_order(objects, seed=args.seed, mode=args.arrival)
    with tempfile.TemporaryDirectory(prefix="late-arrival-") as tmp:
        root = Path(tmp)
        recording = root / "events.jsonl"
        recording.write_text("".join(json.dumps(o) + "\n" for o in objects))
        practices = root / "practices.yaml"
        zones = spec.timezones
        practices.write_text(
            "practices:\n  default: {}\n"
            + "".join(f"  P{i + 1:03d}: {{timezone: {zones[i]}}}\n" for i in range(spec.practices))
        )
        print(json.dumps({"events": len(objects), "arrival": args.arrival}))
        for hold in (float(h) for h in args.holds.split(",")):
            print(json.dumps(run(recording, practices, root, hold, bootstrap)))


if __name__ == "__main__":
    main()
