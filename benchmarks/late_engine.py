"""Late arrival in the engine alone, as a live worker meets it (issue #20): events in a realistic
arrival order, the rules' clock at the latest portal instant seen (a live watermark: no backlog
holds it back), compared with event-time order (what `replay` computes).

Prints per hold: standing alerts and facts equal to event time (and how many differ), alerts
withdrawn and raised late by kind, late events by outcome, and the engine's events/s; then the
engine's events/s on in-order input with and without the horizon log (the cost of corrections).

    python benchmarks/late_engine.py [--practices 3] [--patients 400] [--months 3]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portal_pulse.domain.practices import Practices
from portal_pulse.domain.records import Alert, ResponseFact
from portal_pulse.engine import DictStore, Engine
from portal_pulse.ingest import Ingestor, bounds_from
from portal_pulse.keylog import order_key
from portal_pulse.pipeline import build_machines
from portal_pulse.pseudonym import Pseudonymizer
from portal_pulse.simulate import SimulationSpec, realistic_order, simulate
from schemas.catalogue import source_of
from schemas.jsonl import LineError, iter_lines
from schemas.model import CleanEvent
from schemas.serializer import get_codec


class Versions:
    def __init__(self) -> None:
        self.latest: dict[str, Alert | ResponseFact] = {}

    def alert(self, alert: Alert) -> None:
        self.latest["a" + alert.alert_id] = alert

    def response(self, fact: ResponseFact) -> None:
        self.latest["f" + fact.response_id] = fact

    def standing(self) -> dict[str, tuple]:
        out = {}
        for ident, r in self.latest.items():
            if r.withdrawn_at is not None:
                continue
            if isinstance(r, Alert):
                out[ident] = (r.kind, r.category, r.staff_pool, r.due_at, r.resolved_at,
                              r.response_business_minutes)  # fmt: skip
            else:
                data = r.as_dict()
                data.pop("updated_at", None)
                data.pop("withdrawn_at", None)
                out[ident] = tuple(sorted(data.items()))
        return out


def clean_events(objects: list[dict]) -> list[CleanEvent]:
    ingestor = Ingestor(
        get_codec("RawEvent"), Pseudonymizer(b"late-engine-benchmark-key-0123456789abcdef"),
        bounds=bounds_from(300, 3650),
    )  # fmt: skip
    now = datetime(2030, 1, 1, tzinfo=UTC)
    out = []
    text = io.StringIO("".join(json.dumps(o) + "\n" for o in objects))
    for _, item in iter_lines(text):
        if isinstance(item, LineError):
            continue
        event = ingestor.admit(item, now)
        if isinstance(event, CleanEvent):
            out.append(event)
    return out


def engine(out: Versions, horizon: timedelta | None, hold: timedelta) -> Engine:
    machines = build_machines(Practices.load(None))
    return Engine(
        machines, {m.name: DictStore() for m in machines}, out,
        horizon=horizon, holds={m.name: hold for m in machines},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=3)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    spec = SimulationSpec(args.practices, args.patients, args.months, seed=args.seed)
    objects = [o for o in simulate(spec) if isinstance(o, dict)]
    ordered = clean_events(objects)
    by_id = {(e.practice_id, e.event_id): e for e in ordered}
    arrival = [
        by_id[(o["practice_id"], o["event_id"])]
        for o in realistic_order(objects, seed=args.seed)
        if (o.get("practice_id"), o.get("event_id")) in by_id
    ]
    arrival = list({id(e): e for e in arrival}.values())
    end = max(e.occurred_at for e in ordered) + timedelta(days=100)

    truth = Versions()
    eng = engine(truth, None, timedelta(0))
    for event in sorted(ordered, key=order_key):
        eng.advance(event.occurred_at)
        eng.on_event(event)
    eng.advance(end)
    expected = truth.standing()
    print(json.dumps({"events": len(ordered), "standing_truth": len(expected)}))

    for hold in (timedelta(seconds=60), timedelta(0)):
        got = Versions()
        eng = engine(got, timedelta(days=30), hold)
        outcomes: Counter[str] = Counter()
        clock = None
        t0 = time.perf_counter()
        for event in arrival:
            if source_of(event.event_type) == "portal":
                clock = event.occurred_at if clock is None else max(clock, event.occurred_at)
                eng.advance(clock)
            eng.on_event(event)
            if eng.last_outcome:
                outcomes[eng.last_outcome] += 1
        eng.advance(end + hold)
        seconds = time.perf_counter() - t0
        standing = got.standing()
        print(json.dumps({
            "hold_seconds": hold.total_seconds(),
            "standing_equal": standing == expected,
            "differ": len(set(standing.items()) ^ set(expected.items())),
            "outcomes": dict(outcomes),
            "corrections": {f"{k} {a}": n for (k, a), n in sorted(eng.corrections.items())},
            "events_per_second": round(len(arrival) / seconds),
        }))  # fmt: skip

    for horizon in (None, timedelta(days=30)):
        eng = engine(Versions(), horizon, timedelta(seconds=60))
        t0 = time.perf_counter()
        for event in sorted(ordered, key=order_key):
            eng.advance(event.occurred_at)
            eng.on_event(event)
        seconds = time.perf_counter() - t0
        print(json.dumps({
            "in_order_horizon_days": None if horizon is None else horizon.days,
            "events_per_second": round(len(ordered) / seconds),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
