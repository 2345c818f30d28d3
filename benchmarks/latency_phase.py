"""Benchmark phase: alert latency, from an SLA deadline to the alert row written in ClickHouse.

A 24/7 practice with deadlines seconds away gets unanswered messages stamped "now". First with the
worker otherwise idle (the idle clock fires them), then under a steady live load of other events.
Prints one JSON line with p50/p99 latencies for both phases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import threading
import time
from datetime import UTC, datetime

from confluent_kafka import Producer

from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.settings import Settings
from schemas.catalogue import source_of
from schemas.model import RawEvent
from schemas.serializer import get_codec, raw_event_to_record
from sinks.batching import Batch
from sinks.rows import ALERT_COLUMNS
from streams.app import build_app

RAISED = ALERT_COLUMNS.index("raised_at")
RESOLVED = ALERT_COLUMNS.index("resolved_at")
PRACTICE = ALERT_COLUMNS.index("practice_id")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--threads", type=int, default=40)
    parser.add_argument(
        "--load-rate", type=int, default=2000, help="background events/s in the load phase"
    )
    args = parser.parse_args()
    settings = Settings()
    ensure_topics(settings, args.bootstrap)
    app, rt = build_app(settings, args.bootstrap)
    latencies: dict[str, list[float]] = {"idle": [], "load": []}
    phase = {"name": "idle"}

    def record(batch: Batch) -> None:
        wall = time.time()
        for row in batch.rows:
            if row[PRACTICE] == "BENCH" and row[RESOLVED] is None:
                latencies[phase["name"]].append(wall - row[RAISED].timestamp())

    rt.sinks["alerts"].after_insert = record
    codec = get_codec("RawEvent")
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})

    def send(event: RawEvent) -> None:
        topic = settings.topics.raw[source_of(event.event_type)]
        producer.produce(
            topic,
            key=event.patient_id.encode(),
            value=codec.encode_record(raw_event_to_record(event)),
        )

    def messages(tag: str) -> None:
        for i in range(args.threads):
            now = datetime.now(UTC)
            details = {
                "thread_id": f"{tag}-t{i}",
                "message_id": f"{tag}-m{i}",
                "category": "clinical",
            }
            send(RawEvent(f"{tag}-e{i}", "message.sent", now, "BENCH", f"bench-{tag}-{i}", details))
            producer.poll(0)
            time.sleep(10.0 / args.threads)
        producer.flush()

    def load(stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            tick = time.monotonic()
            for _ in range(args.load_rate // 10):
                n += 1
                now = datetime.now(UTC)
                send(
                    RawEvent(
                        f"load-{n}",
                        "portal.login",
                        now,
                        "LOAD",
                        f"load-{n % 5000}",
                        {"channel": "web"},
                    )
                )
                producer.poll(0)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        producer.flush()

    def scenario() -> None:
        time.sleep(12)  # worker start-up and assignment
        messages("idle")
        time.sleep(40)  # every deadline (≤ 30 s after each message) passes
        phase["name"] = "load"
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(stop,), daemon=True)
        loader.start()
        time.sleep(3)
        messages("load")
        time.sleep(40)
        stop.set()
        loader.join()
        summary = {
            name: {
                "alerts": len(vals),
                "p50_s": round(percentile(vals, 0.5), 3),
                "p99_s": round(percentile(vals, 0.99), 3),
                "mean_s": round(statistics.fmean(vals), 3) if vals else None,
            }
            for name, vals in latencies.items()
        }
        summary["load"]["background_events_per_second"] = args.load_rate
        print(json.dumps(summary), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=scenario, daemon=True).start()
    import faust

    with contextlib.suppress(SystemExit):
        faust.Worker(
            app, loglevel="error", quiet=True, redirect_stdouts=False
        ).execute_from_commandline()


if __name__ == "__main__":
    main()
