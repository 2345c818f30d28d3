"""Portal Pulse benchmark: prints figures, asserts nothing (targets live here, not in tests).

1. produce: a simulated recording to the raw topics as Avro;
2. raw baseline: confluent-kafka consume + Avro decode of those topics (the worker's decoder: the
   compiled reader of `schemas/compiled.py`, fastavro for anything it does not take);
3. end to end: the full worker (ingest, SLA + follow-ups, ClickHouse sinks) until the last event
   row is in chDB, in its own process (events/s and peak RSS);
4. alert latency: deadline → alert row in ClickHouse, idle and under load (p50/p99);
5. dashboard query time (after issue #4's view exists), one practice-month and all practices.
Run several times on a noisy machine and quote medians: ``--repeat N`` measures the raw loop, the
end-to-end run and the alert latency N times (each on topics, a group and a chDB of its own) and
prints the median of each figure as well. benchmarks/README.md says how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.profile_top import report as profile_report  # noqa: E402
from portal_pulse.broker import resolve_bootstrap  # noqa: E402
from portal_pulse.kafka_admin import ensure_topics  # noqa: E402
from portal_pulse.produce import produce_file  # noqa: E402
from portal_pulse.settings import Settings  # noqa: E402
from portal_pulse.simulate import SimulationSpec, simulate_to_file  # noqa: E402
from schemas.serializer import get_codec  # noqa: E402


def raw_baseline(bootstrap: str, topics: list[str], expected: int) -> dict[str, float]:
    codec = get_codec("RawEvent")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52_428_800,
        }
    )
    consumer.subscribe(topics)
    n = 0
    start = None
    deadline = time.monotonic() + 300
    while n < expected and time.monotonic() < deadline:
        batch = consumer.consume(10_000, 1.0)
        if batch and start is None:
            start = time.monotonic()
        for msg in batch:
            if msg.error():
                continue
            value = msg.value()
            if value[:2] == b"\xc3\x01":
                codec.decode_record(value)
            n += 1
    seconds = time.monotonic() - (start or time.monotonic())
    consumer.close()
    return {
        "events": n,
        "seconds": round(seconds, 3),
        "events_per_second": round(n / max(seconds, 1e-9), 1),
    }


def run_phase(script: str, env: dict[str, str], *args: str, profile: Path | None = None) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    if profile is not None:  # py-spy samples only while the GIL is held (-g): what limits it
        spy = Path(sys.executable).with_name("py-spy")
        command = [str(spy), "record", "-g", "-r", "50", "--format", "raw", "-o", str(profile),
                   "--", *command]  # fmt: skip
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    for line in reversed(result.stdout.splitlines()):
        if "{" in line:  # the worker's console may prefix terminal control codes
            return json.loads(line[line.index("{") :])
    raise RuntimeError(
        f"{script} printed no result:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--practices", type=int, default=10)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--metrics",
        default="on",
        help="end-to-end runs: 'on' (HTTP endpoint, /metrics, health timer), 'off', or 'on,off' "
        "to measure what the metrics cost",
    )
    parser.add_argument(
        "--load-rate",
        type=int,
        default=2000,
        help="background events/s while measuring alert latency under load",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="raw loop + end-to-end runs per metrics mode, and alert latency runs (medians "
        "printed when > 1)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the end-to-end worker with py-spy (pip install py-spy) into this file "
        "(one per run: -N appended) and print its top functions",
    )
    args = parser.parse_args()

    base = Settings()
    work = (base.data_dir / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    bootstrap = resolve_bootstrap(base.data_dir)
    run = time.strftime("%Y%m%d%H%M%S")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PORTAL_PULSE_TOPIC_PREFIX": f"bench{run}",
        "PORTAL_PULSE_APP_ID": f"bench-{run}",
        "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{work / ('chdb-' + run)}",
        "PORTAL_PULSE_PSEUDONYM_KEY": os.environ.get(
            "PORTAL_PULSE_PSEUDONYM_KEY", "benchmark-key-not-a-secret-32-bytes"
        ),
        "PORTAL_PULSE_DEDUP_CAPACITY": "2000000",
    }
    os.environ.update(env)
    settings = Settings()

    recording = work / f"events-{args.practices}x{args.patients}x{args.months}.jsonl"
    if not recording.exists():
        spec = SimulationSpec(
            practices=args.practices, patients=args.patients, months=args.months, seed=42
        )
        summary = simulate_to_file(spec, recording)
        print(f"simulated {summary.valid} events ({summary.events_per_second:,.0f} events/s)")
    figures: dict = {}
    for i, mode in enumerate(args.metrics.split(",")):
        runs: list[dict] = []
        for r in range(args.repeat):
            # Each run its own topics, group and chDB: the same recording, produced again.
            tag = f"{run}{mode}{i}r{r}"
            env.update(
                {
                    "PORTAL_PULSE_TOPIC_PREFIX": f"bench{tag}",
                    "PORTAL_PULSE_APP_ID": f"bench-{tag}",
                    "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{work / ('chdb-' + tag)}",
                    # on: the HTTP endpoint, /metrics and the health timer; off: none of them.
                    "PORTAL_PULSE_WEB_PORT": "0" if mode == "on" else "-1",
                }
            )
            os.environ.update(env)
            settings = Settings()
            ensure_topics(settings, bootstrap)
            t0 = time.monotonic()
            produced = produce_file(settings, bootstrap, recording)
            produce_s = time.monotonic() - t0
            n = produced.valid
            print(
                f"produce:      {n:,} events in {produce_s:.1f}s = {n / produce_s:,.0f} events/s (JSONL parse + validate + Avro)"
            )
            raw = raw_baseline(bootstrap, list(settings.topics.raw.values()), n)
            print(
                f"raw baseline: {raw['events']:,} events in {raw['seconds']}s = {raw['events_per_second']:,.0f} events/s (consume + Avro decode)"
            )
            profile = None
            if args.profile is not None:
                profile = args.profile.with_name(f"{args.profile.stem}-{tag}{args.profile.suffix}")
            e2e = run_phase(
                "worker_phase.py", env, "--expect", str(n), "--bootstrap", bootstrap,
                profile=profile,
            )  # fmt: skip
            ratio = e2e["events_per_second"] / raw["events_per_second"]
            print(
                f"end to end (metrics {mode}): {e2e['events']:,} events in {e2e['seconds']}s = {e2e['events_per_second']:,.0f} events/s "
                f"(ingest → clean → SLA/follow-ups → chDB); ratio to raw baseline {ratio:.3f}; worker peak RSS {e2e['peak_rss_mb']} MB"
            )
            if profile is not None:
                print(profile_report(profile))
            runs.append(
                {
                    "produce_events_per_second": round(n / produce_s, 1),
                    "raw": raw,
                    "end_to_end": e2e,
                    "ratio": round(ratio, 4),
                }
            )
        median = {
            "raw_events_per_second": statistics.median(x["raw"]["events_per_second"] for x in runs),
            "events_per_second": statistics.median(
                x["end_to_end"]["events_per_second"] for x in runs
            ),
            "ratio": statistics.median(x["ratio"] for x in runs),
            "peak_rss_mb": statistics.median(x["end_to_end"]["peak_rss_mb"] for x in runs),
        }
        if args.repeat > 1:
            print(
                f"median of {args.repeat} (metrics {mode}): raw {median['raw_events_per_second']:,.0f} events/s, "
                f"end to end {median['events_per_second']:,.0f} events/s, ratio {median['ratio']:.3f}, "
                f"peak RSS {median['peak_rss_mb']} MB"
            )
        figures.update(
            {
                f"runs_metrics_{mode}_{i}": runs,
                f"median_metrics_{mode}_{i}": median,
            }
        )

    if not args.skip_latency:
        practices = work / "latency-practices.yaml"
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        practices.write_text(
            json.dumps(
                {
                    "practices": {
                        "default": {},
                        "BENCH": {
                            "timezone": "UTC",
                            "holidays": [],
                            "hours": {d: "00:00-24:00" for d in days},
                            "sla": {
                                "internal_target": "0.2 business minutes",
                                "external_promise": "0.5 business minutes",
                            },
                        },
                    }
                }
            )
        )
        latencies: list[dict] = []
        for r in range(args.repeat):
            lat_env = dict(env)
            lat_env["PORTAL_PULSE_TOPIC_PREFIX"] = f"benchlat{run}r{r}"
            lat_env["PORTAL_PULSE_APP_ID"] = f"benchlat-{run}-{r}"
            lat_env["PORTAL_PULSE_WEB_PORT"] = "-1"
            lat_env["PORTAL_PULSE_CLICKHOUSE_URL"] = f"chdb://{work / f'chdb-lat-{run}-{r}'}"
            lat_env["PORTAL_PULSE_PRACTICES_FILE"] = str(practices)
            latency = run_phase(
                "latency_phase.py",
                lat_env,
                "--bootstrap",
                bootstrap,
                "--load-rate",
                str(args.load_rate),
            )
            for name, vals in latency.items():
                print(f"alert latency ({name}): {vals}")
            latencies.append(latency)
        figures["alert_latency"] = latencies
        if args.repeat > 1:
            for name in ("idle", "load"):
                p50 = statistics.median(x[name]["p50_s"] for x in latencies)
                p99 = statistics.median(x[name]["p99_s"] for x in latencies)
                print(f"alert latency ({name}), median of {args.repeat}: p50 {p50} s, p99 {p99} s")

    print(json.dumps(figures))


if __name__ == "__main__":
    main()
