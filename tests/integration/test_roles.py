"""Roles on the real broker: one ``sink`` and two ``process`` workers share a recording.

Each worker has its own data directory; only the sink opens the chDB path. The recording goes
in two halves: the second while the workers run. All of them finish by ``--exit-when-idle``;
then the tables must equal the offline replay of the same file, as in the fault-injection suite:
every valid event once in ``events`` without FINAL, the same alerts, response facts, monthly
view and dead letters, and each role's consumer group committed everything it reads.

Scenarios, each on the second half:
- steady: both process workers run throughout;
- kill: one process worker is killed with ``kill -9``; the survivor takes over its partitions
  and their state (changelogs, standby replicas);
- join: a second process worker joins while the first works; it takes its share;
- sink restart: the sink is killed with ``kill -9`` and a new one takes over its group.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.integration import test_fault_injection as faults
from tests.integration.conftest import LIVENESS_SCALE, Pipeline, query_chdb
from tests.integration.test_fault_injection import (
    DEAD_LETTERS_SQL,
    EVENTS_SQL,
    Baseline,
    Recording,
    Worker,
    assert_matches_replay,
)

# The fault-injection suite's recording (with its sentinel) and its offline replay, one per module.
recording = faults.recording
baseline = faults.baseline

# ``cpu_load``: every core busy for the module under PORTAL_PULSE_TEST_CPU_LOAD=1 (conftest).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.usefixtures("cpu_load"),
]

# A dead process worker's partitions move after this (the default is 10 s).
SESSION_TIMEOUT = "6"
# The sink stops once its group has committed everything and nothing arrived for this long; it
# must outlast the failover gap (session timeout, rebalance, state recovery) to see it all.
SINK_IDLE = "20"
# Long enough that a process worker done with the first half is still running when the second
# half's `produce` (a process of its own, seconds to start on a loaded machine) delivers.
PROCESS_IDLE = "8"


def _halves(rec: Recording, root: Path) -> tuple[Path, Path]:
    """The recording as two files, produced one after the other (the replay reads it whole)."""
    lines = rec.events.read_text().splitlines(keepends=True)
    cut = len(lines) * 3 // 5
    first, second = root / "first.jsonl", root / "second.jsonl"
    first.write_text("".join(lines[:cut]))
    second.write_text("".join(lines[cut:]))
    return first, second


@pytest.fixture
def launched() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for w in workers:
        if w.proc.poll() is None:
            w.kill()


def _wait(w: Worker, timeout: float) -> int:
    timeout *= LIVENESS_SCALE  # a liveness bound, stretched under PORTAL_PULSE_TEST_CPU_LOAD
    try:
        return w.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{w.name} did not finish within {timeout:.0f}s:\n{w.stderr()[-4000:]}")


Scenario = Literal["steady", "kill", "join", "sink-restart"]


def _run_roles(
    pipeline: Pipeline,
    recording: Recording,
    launched: list[Worker],
    tmp_path: Path,
    scenario: Scenario,
) -> list[str]:
    """One sink and two process workers on the recording, the second half under ``scenario``.
    Returns the workers' logs once everything has finished."""
    first, second = _halves(recording, tmp_path)
    produced = pipeline.cli("produce", str(first), env=recording.env)
    assert produced.returncode == 0, produced.stderr[-4000:]

    def launch(name: str, *args: str) -> Worker:
        own = {
            **recording.env,
            "PORTAL_PULSE_DATA_DIR": str(tmp_path / f"var-{name}"),
            "PORTAL_PULSE_SESSION_TIMEOUT_SECONDS": SESSION_TIMEOUT,
        }
        w = Worker(pipeline, own, tmp_path, name, args)
        launched.append(w)
        return w

    sink = launch("sink", "--role", "sink", "--exit-when-idle", SINK_IDLE)
    p1 = launch("process-1", "--role", "process", "--exit-when-idle", PROCESS_IDLE)
    starters = [sink, p1]
    if scenario != "join":
        starters.append(launch("process-2", "--role", "process", "--exit-when-idle", PROCESS_IDLE))
    for w in starters:
        print(f"[roles] {w.name} ready {w.ready(timeout=120):.1f}s after launch")

    # The second half arrives while the workers run.
    produced = pipeline.cli("produce", str(second), env=recording.env)
    assert produced.returncode == 0, produced.stderr[-4000:]
    began = time.monotonic()
    sinks = [sink]
    if scenario == "kill":
        time.sleep(1.0)
        assert p1.proc.poll() is None, f"process-1 exited early:\n{p1.stderr()[-3000:]}"
        p1.kill()
        assigned = [ln for ln in p1.stderr().splitlines() if "partitions assigned" in ln]
        print(f"[roles] process-1 killed; its last assignment: {assigned[-1] if assigned else '-'}")
        process = [launched[2]]
    elif scenario == "join":
        time.sleep(0.5)
        assert p1.proc.poll() is None, f"process-1 finished before the join:\n{p1.stderr()[-3000:]}"
        p2 = launch("process-2", "--role", "process", "--exit-when-idle", PROCESS_IDLE)
        print(f"[roles] process-2 joined; ready {p2.ready(timeout=120):.1f}s after launch")
        process = [p1, p2]
    elif scenario == "sink-restart":
        time.sleep(1.0)
        sink.kill()
        print("[roles] sink killed with kill -9; a new sink takes over")
        sink = launch("sink-2", "--role", "sink", "--exit-when-idle", SINK_IDLE)
        sinks.append(sink)
        process = [p1, launched[2]]
    else:
        process = [p1, launched[2]]
    for w in process:
        code = _wait(w, 180)
        assert code == 0, f"{w.name} exit {code}:\n{w.stderr()[-4000:]}"
    print(f"[roles] process workers caught up and exited {time.monotonic() - began:.1f}s later")
    sink_done_early = sink.proc.poll() is not None

    code = _wait(sink, 180)
    assert code == 0, f"{sink.name} exit {code}:\n{sink.stderr()[-4000:]}"
    if sink_done_early:
        # Idle before the survivor's last outputs (a long failover): another sink finishes.
        late = launch("sink-late", "--role", "sink", "--exit-when-idle", "3")
        code = _wait(late, 180)
        assert code == 0, f"late sink exit {code}:\n{late.stderr()[-4000:]}"
        sinks.append(late)
        print("[roles] the sink went idle before the process workers finished; another finished")

    # Only the sinks held ClickHouse; the process workers never opened it.
    everyone = launched
    for w in everyone:
        if w not in sinks:
            assert "ClickHouse none" in w.stderr(), w.name
    logs = [w.stderr() for w in everyone]
    copies = sum(log.count("second copies of a raw record") for log in logs)
    print(f"[roles] log lines about second copies of raw records: {copies}")
    assert pipeline.group_lag("process") == {}
    assert pipeline.group_lag("sink") == {}
    return logs


def _check(pipeline: Pipeline, baseline: Baseline, logs: list[str], label: str) -> None:
    """Every valid event once (without FINAL), and everything else equal to the replay."""
    events, dead = query_chdb(pipeline.chdb, [EVENTS_SQL, DEAD_LETTERS_SQL])
    count, distinct, checksum = events[0]
    print(f"[{label}] events {count} (distinct {distinct}) vs replay {baseline.events[0]}")
    want = baseline.events
    assert (count, distinct, checksum) == (want[1], want[1], want[2]), "events exactly once"
    assert {r: n for r, n in dead} == baseline.dead_letters
    assert_matches_replay(
        pipeline, baseline, label=label, context="\n".join(logs), roles=("process", "sink")
    )


@pytest.fixture(scope="module")
def late_recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """The same stream in a realistic arrival order (portal jitter, offline phones, EHR lag,
    nightly billing, surveys days late: SPEC §7.1)."""
    root = tmp_path_factory.mktemp("late-recording")
    rec = Recording(root / "events.jsonl", root / "practices.yaml")
    faults._write_recording(rec.events, rec.practices, arrival="realistic")
    return rec


def test_sink_and_two_process_workers_on_late_arrival(
    pipeline: Pipeline,
    late_recording: Recording,
    kafka_bootstrap: str,
    launched: list[Worker],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue #20: late and out-of-order events through two process workers and a sink give the
    replay's standing alerts, facts and monthly figures."""
    expected = faults.replay_baseline(
        late_recording, kafka_bootstrap, tmp_path_factory.mktemp("late-replay")
    )
    logs = _run_roles(pipeline, late_recording, launched, tmp_path, "steady")
    _check(pipeline, expected, logs, "roles-late-arrival")


@pytest.mark.parametrize("scenario", ["steady", "kill", "join", "sink-restart"])
def test_sink_and_two_process_workers(
    pipeline: Pipeline,
    recording: Recording,
    baseline: Baseline,
    launched: list[Worker],
    tmp_path: Path,
    scenario: Scenario,
) -> None:
    logs = _run_roles(pipeline, recording, launched, tmp_path, scenario)
    _check(pipeline, baseline, logs, f"roles-{scenario}")
