"""Roles benchmark: end-to-end events/s of real worker processes per role layout, and failover.

Issue #11 item 5: how fast `all` ×1, `process` ×1 + `sink` and `process` ×2 + `sink` get a
recording from the raw topics into ClickHouse's `events` table on this machine, and how long a
`kill -9` of one process worker costs. Each configuration gets fresh topics, consumer groups and
a chDB path, the recording produced again, and `portal-pulse worker` subprocesses (each its own
data directory, web port and process group). Progress is read from outside, as an operator would:
`portal_pulse_sink_rows_total{table="events"}` on the sink's (or the `all` worker's) /metrics,
every 0.2 s. Failover: process ×2 + sink, one process worker's group `kill -9`ed once half the
rows are in; timed to the process group having committed everything (its lag read from outside)
and to the sink having every row. The session timeout (--session-timeout) is how long the dead
worker's partitions stay its own. Prints figures, asserts nothing; on a shared machine run
several times (--runs) and quote medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import raw_baseline  # noqa: E402
from portal_pulse.broker import resolve_bootstrap  # noqa: E402
from portal_pulse.kafka_admin import ensure_topics  # noqa: E402
from portal_pulse.produce import produce_file  # noqa: E402
from portal_pulse.roles import group_id, topics_read  # noqa: E402
from portal_pulse.settings import Settings  # noqa: E402
from portal_pulse.simulate import SimulationSpec, simulate_to_file  # noqa: E402
from streams.group_lag import GroupLag  # noqa: E402

# Configuration name → (label, the workers' roles). The first worker with a ClickHouse role is
# the one whose /metrics is watched.
CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all": ("all×1", ("all",)),
    "process": (
        "process×1 alone (raw → clean → state, alerts, facts; no ClickHouse)",
        ("process",),
    ),
    "process+sink": ("process×1 + sink", ("sink", "process")),
    "process2+sink": ("process×2 + sink", ("sink", "process", "process")),
    "failover": ("failover (process×2 + sink, kill -9 one)", ("sink", "process", "process")),
}
POLL = 0.2
EVENTS_ROWS = re.compile(r'^portal_pulse_sink_rows_total\{table="events"\} (\S+)$', re.M)
INGESTED = re.compile(r'^portal_pulse_events_total\{outcome="[a-z_]+"\} (\S+)$', re.M)


class BenchError(RuntimeError):
    """A configuration could not be measured (a worker died, a timeout)."""


def free_port() -> int:
    """A port nobody listens on now (the worker binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_command() -> list[str]:
    """The venv's `portal-pulse` script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("portal-pulse")
    return [str(script)] if script.exists() else [sys.executable, "-m", "portal_pulse.cli"]


class Worker:
    """One `portal-pulse worker --role R` in its own process group, its output in files."""

    def __init__(self, name: str, role: str, env: dict[str, str], work: Path) -> None:
        self.name, self.role, self.port = name, role, free_port()
        self.stderr_path = work / f"{name}.stderr"
        own = {**env, "PORTAL_PULSE_DATA_DIR": str(work / f"var-{name}")}
        args = ["worker", "--role", role, "--web-port", str(self.port), "--loglevel", "info"]
        with open(work / f"{name}.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*worker_command(), *args],
                env=own,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,  # kill -9 of the group takes any child with it
            )
        self.killed = self.terminated = False

    def tail(self, chars: int = 3000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def _metrics(self) -> str:
        """The worker's /metrics text; empty while its endpoint is not up yet."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except (urllib.error.URLError, OSError):
            return ""

    def events_rows(self) -> int:
        """The worker's `events` rows counter; 0 while its endpoint is not up yet."""
        found = EVENTS_ROWS.search(self._metrics())
        return int(float(found.group(1))) if found else 0

    def ingested(self) -> int:
        """Raw records its ingest has handled (clean, dead letter or duplicate)."""
        return sum(int(float(n)) for n in INGESTED.findall(self._metrics()))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker process has used so far: on a shared machine a
        steadier figure than its wall time, which other tenants' load stretches."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def holds_partitions(self) -> bool:
        """Its last assignment (logged by the worker) is not empty."""
        lines = [ln for ln in self.tail(200_000).splitlines() if "partitions assigned" in ln]
        return bool(lines) and not lines[-1].rstrip().endswith("none")

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None and not self.killed:
            raise BenchError(f"{self.name} exited with {code}; its stderr ends:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown of any kind."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)

    def terminate(self) -> None:
        """One SIGTERM (a second one, once the worker restored the default handler, kills it)."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, within: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``within`` seconds; the exit code of a clean stop."""
        self.terminate()
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class LagWatch(threading.Thread):
    """Polls the process group's lag in the background, so the /metrics poll keeps its pace."""

    def __init__(self, lag: GroupLag, after: float) -> None:
        super().__init__(daemon=True)
        self.lag, self.after = lag, after
        self.caught_up: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and self.caught_up is None:
            began = time.monotonic()
            with contextlib.suppress(Exception):  # a slow broker answer: ask again
                if began >= self.after and self.lag.behind() == {}:
                    self.caught_up = began
            self.halt.wait(max(0.0, POLL - (time.monotonic() - began)))


@dataclass
class Run:
    """One configuration's figures (seconds are from the workers' launch unless named)."""

    events: int
    startup_s: float
    seconds: float
    events_per_second: float | None
    load_1min: float  # this machine's load average when the last row arrived (2 cores: noisy)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def timed(
        cls, events: int, launched: float, t0: float, t1: float, extra: dict[str, Any] | None = None
    ) -> Run:
        """Figures of ``events`` done between ``t0`` and ``t1``, workers launched at ``launched``."""
        seconds = t1 - t0
        return cls(
            events=events,
            startup_s=round(t0 - launched, 2),
            seconds=round(seconds, 2),
            # All in the first poll that saw any: faster than the poll can tell.
            events_per_second=round(events / seconds, 1) if seconds > 0 else None,
            load_1min=round(os.getloadavg()[0], 1),
            extra=extra or {},
        )


def measure(
    name: str,
    roles: tuple[str, ...],
    env: dict[str, str],
    work: Path,
    expected: int,
    timeout: float,
    settings: Settings,
    bootstrap: str,
) -> Run:
    """Launch the workers, watch the events rows counter until all ``expected`` are in."""
    counts: dict[str, int] = {}
    workers: list[Worker] = []
    for role in roles:
        counts[role] = counts.get(role, 0) + 1
        workers.append(Worker(f"{role}-{counts[role]}", role, env, work))
    launched = time.monotonic()
    if all(w.role == "process" for w in workers):
        return measure_process(name, workers[0], launched, expected, timeout, settings, bootstrap)
    watched = next(w for w in workers if w.role != "process")
    t0: float | None = None
    kill: dict[str, Any] = {}
    kill_at = float("inf")
    lag: GroupLag | None = None
    watch: LagWatch | None = None
    try:
        while True:
            began = time.monotonic()
            for w in workers:
                w.check()
            if began - launched > timeout:
                raise BenchError(
                    f"{name}: {timeout:.0f}s and {watched.events_rows():,}/{expected:,} events "
                    f"rows (logs in {work}); {watched.name}'s stderr ends:\n{watched.tail()}"
                )
            rows = watched.events_rows()
            if t0 is None and rows > 0:
                t0 = began
            if name == "failover" and not kill and rows >= expected / 2:
                process = [w for w in workers if w.role == "process"]
                victim = next((w for w in process if w.holds_partitions()), process[0])
                lag = GroupLag(
                    settings,
                    bootstrap,
                    topics_read(settings, "process"),
                    group=group_id(settings, "process"),
                )
                behind = lag.behind()
                victim.kill()
                kill = {
                    "at": time.monotonic(),
                    "worker": victim.name,
                    "events_rows_at_kill": rows,
                    "process_group_behind_at_kill": sum(behind.values()),
                }
                kill_at = kill["at"]
                watch = LagWatch(lag, kill_at)
                watch.start()
            # Failover: the sink's completion is timed by a poll after the kill.
            if rows >= expected and t0 is not None and (name != "failover" or began > kill_at):
                t1 = began
                break
            time.sleep(max(0.0, POLL - (time.monotonic() - began)))
        extra: dict[str, Any] = {}
        if kill and watch is not None:
            while watch.caught_up is None:  # the sink can finish before the group commits
                for w in workers:
                    w.check()
                if time.monotonic() - launched > timeout:
                    raise BenchError(
                        f"{name}: the process group not caught up in {timeout:.0f}s (logs in {work})"
                    )
                time.sleep(POLL)
            extra = {
                "killed": kill["worker"],
                "events_rows_at_kill": kill["events_rows_at_kill"],
                "process_group_behind_at_kill": kill["process_group_behind_at_kill"],
                "kill_to_group_caught_up_s": round(watch.caught_up - kill["at"], 2),
                "kill_to_sink_complete_s": round(t1 - kill["at"], 2),
                "session_timeout_s": float(env["PORTAL_PULSE_SESSION_TIMEOUT_SECONDS"]),
            }
        assert t0 is not None
        return Run.timed(rows, launched, t0, t1, extra)
    finally:
        if watch is not None:
            watch.halt.set()
            watch.join(10)
        if lag is not None:
            lag.close()
        for w in workers:  # in parallel: SIGTERM to all, then wait for each
            w.terminate()
        for w in workers:
            code = w.stop()
            if code not in (0, None) and not w.killed:
                print(f"  note: {w.name} exited with {code} after SIGTERM (log {w.stderr_path})")


def measure_process(
    name: str,
    worker: Worker,
    launched: float,
    expected: int,
    timeout: float,
    settings: Settings,
    bootstrap: str,
) -> Run:
    """A `process` worker alone (issue #18's "per process worker" figure): first raw record
    ingested → its group has committed every raw and clean partition it reads, that is, every
    event went through ingest and the processors and their outputs are delivered. Nothing
    writes ClickHouse."""
    lag = GroupLag(
        settings, bootstrap, topics_read(settings, "process"), group=group_id(settings, "process")
    )
    t0: float | None = None
    cpu0 = 0.0
    try:
        while True:
            began = time.monotonic()
            worker.check()
            if began - launched > timeout:
                raise BenchError(f"{name}: not caught up in {timeout:.0f}s:\n{worker.tail()}")
            if t0 is None and worker.ingested() > 0:
                t0, cpu0 = began, worker.cpu_seconds()
            if t0 is not None:
                with contextlib.suppress(Exception):  # a slow broker answer: ask again
                    if lag.behind() == {} and worker.ingested() >= expected:
                        break
            time.sleep(max(0.0, POLL - (time.monotonic() - began)))
        assert t0 is not None
        t1, cpu = time.monotonic(), worker.cpu_seconds() - cpu0
        return Run.timed(
            expected, launched, t0, t1, {"worker_cpu_us_per_event": round(cpu / expected * 1e6, 1)}
        )
    finally:
        lag.close()
        code = worker.stop()
        if code not in (0, None):
            print(f"  note: {worker.name} exited with {code} after SIGTERM ({worker.stderr_path})")


def describe(label: str, run: Run) -> str:
    rate = (
        f"{run.events_per_second:,.0f} events/s"
        if run.events_per_second is not None
        else f"? events/s (all within one {POLL:g} s poll: use a larger recording)"
    )
    line = (
        f"{label}: {run.events:,} events in {run.seconds:.1f} s = {rate} "
        f"(start-up {run.startup_s:.1f} s; load average {run.load_1min:g})"
    )
    x = run.extra
    if "worker_cpu_us_per_event" in x:
        line += f"; worker CPU {x['worker_cpu_us_per_event']:g} µs per event"
    if "ratio_to_raw_loop" in x:
        line += (
            f"; raw loop {x['raw_loop_events_per_second']:,.0f} events/s just before, "
            f"ratio {x['ratio_to_raw_loop']:.3f}"
        )
    if "killed" in x:
        if x["events_rows_at_kill"] >= run.events:
            line += "; the sink had every row before the kill"
        line += (
            f"; kill -9 {x['killed']} at {x['events_rows_at_kill']:,} events rows "
            f"(process group {x['process_group_behind_at_kill']:,} messages behind): "
            f"group caught up {x['kill_to_group_caught_up_s']:.1f} s later, sink complete "
            f"{x['kill_to_sink_complete_s']:.1f} s later (session timeout {x['session_timeout_s']:g} s)"
        )
    return line


def medians(runs: list[Run]) -> dict[str, float | None]:
    rates = [r.events_per_second for r in runs if r.events_per_second is not None]
    keys: dict[str, list[float]] = {"events_per_second": rates}
    keys["seconds"] = [r.seconds for r in runs]
    keys["startup_s"] = [r.startup_s for r in runs]
    for k in ("kill_to_group_caught_up_s", "kill_to_sink_complete_s", "worker_cpu_us_per_event",
              "ratio_to_raw_loop"):  # fmt: skip
        if all(k in r.extra for r in runs):
            keys[k] = [r.extra[k] for r in runs]
    return {k: round(statistics.median(v), 2) if v else None for k, v in keys.items()}


def _num(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--practices", type=int, default=3)
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1, help="repeat each configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=6.0,
        help="PORTAL_PULSE_SESSION_TIMEOUT_SECONDS of the failover workers (the worker's default, "
        "10, elsewhere): how long a dead process worker holds its partitions",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per configuration run")
    parser.add_argument(
        "--raw-loop",
        action="store_true",
        help="before each configuration run, time the raw loop (consume + decode, run.py's "
        "baseline) on the same topics, and give the run's ratio to it",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the chDB paths and data dirs (logs always stay)"
    )
    args = parser.parse_args()
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")

    # SIGTERM to this script stops the workers as ctrl-C does (the finally blocks run).
    signal.signal(signal.SIGTERM, _interrupt)

    base = Settings()
    bench = (base.data_dir / "bench").resolve()
    bench.mkdir(parents=True, exist_ok=True)
    bootstrap = resolve_bootstrap(base.data_dir)
    run_id = time.strftime("%Y%m%d%H%M%S")
    root = bench / f"roles-{run_id}"

    recording = bench / f"events-{args.practices}x{args.patients}x{args.months}.jsonl"
    if not recording.exists():
        spec = SimulationSpec(
            practices=args.practices, patients=args.patients, months=args.months, seed=42
        )
        summary = simulate_to_file(spec, recording)
        print(f"simulated {summary.valid:,} events ({summary.events_per_second:,.0f} events/s)")
    lines = sum(1 for _ in recording.open("rb"))
    print(
        f"recording {recording.name}: {lines:,} events, {recording.stat().st_size / 1e6:.1f} MB; "
        f"broker {bootstrap}; failover session timeout {args.session_timeout:g} s; logs under {root}"
    )

    base_env = dict(os.environ)
    results: dict[str, list[Run]] = {}
    produced_valid = 0
    try:
        for i in range(args.runs):
            for name in names:
                label, roles = CONFIGS[name]
                tag = f"{run_id}{name.replace('+', '')}{i}"
                work = root / f"{name}-{i}"
                work.mkdir(parents=True)
                env = {
                    **base_env,
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "PORTAL_PULSE_TOPIC_PREFIX": f"benchroles{tag}",
                    "PORTAL_PULSE_APP_ID": f"benchroles-{tag}",
                    "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{work / 'chdb'}",
                    "PORTAL_PULSE_PSEUDONYM_KEY": base_env.get(
                        "PORTAL_PULSE_PSEUDONYM_KEY", "benchmark-key-not-a-secret-32-bytes"
                    ),
                    "PORTAL_PULSE_DEDUP_CAPACITY": "2000000",
                }
                if name == "failover":
                    # Short, as a deployment that wants quick failover would set it; elsewhere
                    # a 2-core machine under load can miss heartbeats for that long.
                    env["PORTAL_PULSE_SESSION_TIMEOUT_SECONDS"] = f"{args.session_timeout:g}"
                os.environ.clear()  # Settings() reads the environment: exactly this run's
                os.environ.update(env)
                settings = Settings()
                ensure_topics(settings, bootstrap)
                produced = produce_file(settings, bootstrap, recording)
                produced_valid = produced.valid
                raw = None
                if args.raw_loop:
                    raw = raw_baseline(
                        bootstrap, list(settings.topics.raw.values()), produced.valid
                    )
                result = measure(
                    name, roles, env, work, produced.valid, args.timeout, settings, bootstrap
                )
                if raw is not None and result.events_per_second is not None:
                    result.extra["raw_loop_events_per_second"] = raw["events_per_second"]
                    result.extra["ratio_to_raw_loop"] = round(
                        result.events_per_second / raw["events_per_second"], 3
                    )
                results.setdefault(name, []).append(result)
                print(describe(label, result), flush=True)
                if not args.keep:
                    shutil.rmtree(work / "chdb", ignore_errors=True)
                    for data in work.glob("var-*"):
                        shutil.rmtree(data, ignore_errors=True)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: workers stopped", file=sys.stderr)
        sys.exit(130)

    figures: dict[str, Any] = {
        "recording": {"file": recording.name, "events": lines, "valid": produced_valid},
        "failover_session_timeout_seconds": args.session_timeout,
        "runs": args.runs,
        "cpus": os.cpu_count(),
    }
    if args.runs > 1:
        print(f"medians over {args.runs} runs:")
    for name, runs in results.items():
        mid = medians(runs)
        if args.runs > 1:
            line = (
                f"  {CONFIGS[name][0]}: {_num(mid['events_per_second'], ',.0f')} events/s, "
                f"{_num(mid['seconds'], '.1f')} s, start-up {_num(mid['startup_s'], '.1f')} s"
            )
            if mid.get("worker_cpu_us_per_event") is not None:
                line += f"; worker CPU {mid['worker_cpu_us_per_event']:g} µs per event"
            if mid.get("ratio_to_raw_loop") is not None:
                line += f"; ratio to the raw loop {mid['ratio_to_raw_loop']:.3f}"
            if "kill_to_group_caught_up_s" in mid:
                line += (
                    f"; kill → group caught up {_num(mid['kill_to_group_caught_up_s'], '.1f')} s, "
                    f"kill → sink complete {_num(mid['kill_to_sink_complete_s'], '.1f')} s"
                )
            print(line)
        figures[name] = {
            "median": mid,
            "runs": [
                {**{k: v for k, v in vars(r).items() if k != "extra"}, **r.extra} for r in runs
            ],
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
