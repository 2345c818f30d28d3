"""State size per tracked patient, and memory with N tracked patients (default 1,000,000).

Drives the follow-up machine and the live-metrics aggregator through the Engine exactly as the
worker does, with the stores the worker's in-memory Faust tables hold (the engine's bytes, one
record per patient), then reports the changelog bytes per patient (key and value records as the
worker writes them, with an input offset stamped) and the process's RSS growth per patient
(states, keys, the deadline index and the live figures).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal_pulse.domain.live import LiveMetrics
from portal_pulse.domain.practices import Practices
from portal_pulse.engine import VALUE_HEADER, DictStore, Engine
from portal_pulse.pipeline import build_machines
from schemas.model import CleanEvent


class NullOutputs:
    alerts = 0

    def alert(self, alert: object) -> None:
        self.alerts += 1

    def response(self, fact: object) -> None:
        pass


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--practices", type=int, default=50)
    parser.add_argument(
        "--horizon-days",
        type=float,
        default=30.0,
        help="the worker's correction horizon (0: no horizon log, as replay runs)",
    )
    args = parser.parse_args()
    practices = Practices.load(None)
    machines = build_machines(practices)
    stores = {m.name: DictStore() for m in machines}
    out = NullOutputs()
    live_store = DictStore()
    live = LiveMetrics(
        live_store, lambda pid, at: practices.for_practice(pid).calendar.local_date(at)
    )
    engine = Engine(
        machines,
        stores,
        out,
        on_change=live.on_state_change,
        horizon=timedelta(days=args.horizon_days) if args.horizon_days > 0 else None,
        holds={"sla": timedelta(seconds=60), "followups": timedelta(hours=1)},
    )
    base_rss = rss_mb()
    start = datetime(2026, 1, 5, 14, tzinfo=UTC)
    t0 = time.monotonic()
    for i in range(args.patients):
        practice = f"P{i % args.practices + 1:03d}"
        patient = f"{i:032x}"
        at = start + timedelta(seconds=i % 86_400)
        for n, (kind, details, dt) in enumerate(
            (
                ("portal.invited", {"method": "email"}, 0),
                ("portal.enrolled", {"method": "in_office"}, 600),
                ("portal.login", {"channel": "web"}, 900),
            )
        ):
            event = CleanEvent(
                f"{i}-{n}", kind, at + timedelta(seconds=dt), practice, patient, details
            )
            offset = 3 * i + n + 1_000_000  # the worker stamps every key with its input offset
            engine.on_event(event, 0, offset)
            live.apply(event, 0, offset)
    seconds = time.monotonic() - t0
    follow = stores["followups"].data
    sample = list(follow.items())[:1000]
    state_bytes = sum(len(v) - VALUE_HEADER.size for _, v in sample) / len(sample)
    # A changelog record per patient: the JSON key and the value bytes (streams/state.py).
    changelog_bytes = sum(len(json.dumps(k)) + len(v) for k, v in sample) / len(sample)
    per_patient_live = [k for k in live_store.data if k.startswith("p|")]  # none: one record
    rss = rss_mb()
    result = {
        "horizon_days": args.horizon_days,
        "tracked_patients": len(follow),
        "followup_state_bytes_per_patient": round(state_bytes, 1),
        "changelog_bytes_per_patient": round(changelog_bytes, 1),
        "live_keys_per_patient": round(len(per_patient_live) / max(1, len(follow)), 3),
        "pending_deadlines": engine.pending(),
        "rss_mb_before": round(base_rss, 1),
        "rss_mb_after": round(rss, 1),
        "rss_bytes_per_patient": round((rss - base_rss) * 1024 * 1024 / max(1, len(follow)), 1),
        "events_per_second_through_machines": round(3 * args.patients / seconds, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
