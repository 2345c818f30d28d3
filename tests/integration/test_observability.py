"""What an operator sees of a running worker: probes, metrics, status, reads while it runs.

One worker on a small recording, on the real broker and chDB: ``/readyz`` says 503 before it has
caught up and 200 after; ``/metrics`` counts exactly what was produced; ``alerts``, ``followups``
and ``dashboard`` work on the embedded database the worker holds and print what they print once
it has stopped; no metric label and no log line carries a patient id or a pseudonym.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portal_pulse.metrics import METRIC_NAMES
from portal_pulse.simulate import SimulationSpec, simulate_labelled
from tests.integration.conftest import Pipeline, free_port

pytestmark = pytest.mark.integration

SPEC = SimulationSpec(practices=2, patients=60, months=2, seed=21, bad_fraction=0.03)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None


def _metrics(url: str) -> tuple[dict[str, dict[tuple[tuple[str, str], ...], float]], set[str]]:
    """Samples by name and labels, and the metric family names the worker exports."""
    response = httpx.get(f"{url}/metrics", timeout=10.0)
    assert response.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    families = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples, families


def _reads(pipeline: Pipeline) -> dict[str, str]:
    commands = {
        "alerts": ("alerts", "--format", "json"),
        "followups": ("followups", "--practice", "P001", "--format", "csv"),
        "dashboard": ("dashboard", "--practice", "P001", "--month", "2026-02", "--format", "json"),
    }
    out = {}
    for name, args in commands.items():
        result = pipeline.cli(*args)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr
        out[name] = result.stdout
    return out


def test_probes_metrics_and_reads_of_a_running_worker(pipeline: Pipeline, tmp_path: Path) -> None:
    labelled = list(simulate_labelled(SPEC))
    recording = tmp_path / "events.jsonl"
    recording.write_text("".join(json.dumps(obj) + "\n" for _, obj in labelled))
    produced = pipeline.cli("produce", str(recording))
    assert produced.returncode == 0, produced.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "worker.log"
    with open(log, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "portal_pulse.cli", "worker", "--web-port", str(port)],
            # Ready means nothing behind at all, so a first 200 can be checked (below); the
            # event clocks follow the sources only, not the wall clock once idle, so no
            # deadline fires while the reads below compare the worker with the database.
            env={
                **pipeline.env,
                "PORTAL_PULSE_READY_MAX_LAG": "0",
                "PORTAL_PULSE_IDLE_GRACE_SECONDS": "1000000",
            },
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        # 1. Alive at once; not ready until the group has joined, state is recovered and the
        #    backlog is read.
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready = _get(f"{url}/readyz")
            if ready is not None:
                seen.append(ready.status_code)
                if ready.status_code == 200:
                    break
                body = ready.json()
                assert body["ready"] is False and body["reasons"], body
            time.sleep(0.2)
        assert seen, "/readyz never answered"
        assert seen[-1] == 200, f"never ready: {log.read_text()[-3000:]}"
        if seen[0] == 200:
            # The worker joined, restored and read the whole (small) backlog before its first
            # answer reached us (a loaded machine delays the request): then ready must mean
            # that nothing is behind, on every partition.
            metrics, _ = _metrics(url)
            lags = metrics["portal_pulse_consumer_lag"]
            assert lags and not any(lags.values()), lags
        health = _get(f"{url}/healthz")
        assert health is not None and health.status_code == 200

        # 2. Counters equal what the recording holds (waiting for the last events to pass).
        want = Counter(label for label, _ in labelled)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics, families = _metrics(url)
            events = metrics["portal_pulse_events_total"]
            if events.get((("outcome", "clean"),), 0) >= want["valid"]:
                break
            time.sleep(0.5)
        got = {dict(k)["outcome"]: v for k, v in events.items()}
        dead_by_reason = {  # every documented reason has a sample; those that happened:
            dict(k)["reason"]: v for k, v in metrics["portal_pulse_dead_letters_total"].items() if v
        }
        want_dead = {r: n for r, n in want.items() if r not in ("valid", "duplicate")}
        print(f"\nrecording {dict(want)}; metrics {got}; dead letters {dead_by_reason}")
        assert got["clean"] == want["valid"]
        assert got["duplicate"] == want["duplicate"]
        assert got["dead_letter"] == sum(want_dead.values())
        assert sum(dead_by_reason.values()) == got["dead_letter"]
        # The contract: every documented family is exported (prometheus_client drops _total).
        assert {n.removesuffix("_total") for n in METRIC_NAMES} <= families

        # 3. Status, and the reading commands through the worker that holds the chDB path,
        #    once the pipeline is settled: the final watermark is announced ("every source
        #    caught up"), and after that the group has committed every partition up to the end
        #    the broker answers now. A commit follows the checkpoint (outputs delivered, rows
        #    in ClickHouse), so the alerts the last watermark fired are in ClickHouse then. (The
        #    worker's own lag figures use the log ends as last fetched: an alert just written
        #    may not be in them yet, so they cannot say "settled".)
        deadline = time.monotonic() + 120
        while True:
            announced = "every source caught up" in log.read_text(errors="replace")
            status = pipeline.cli("status", "--format", "json")
            body = json.loads(status.stdout) if status.stdout.strip() else {}
            if announced and body.get("ready") and not pipeline.group_lag():
                break
            assert time.monotonic() < deadline, f"never settled: {body} {status.stderr}"
            time.sleep(0.5)
        assert status.returncode == 0, status.stderr
        assert _metrics(url)[0]["portal_pulse_ready"][()] == 1
        during = _reads(pipeline)
        metrics_text = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0
    after = _reads(pipeline)
    assert during == after, "the same output through the worker and from the database"
    table = pipeline.query("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason")
    assert dead_by_reason == {reason: n for reason, n in table}, "metrics by reason = the table"

    # 4. No patient identifier or pseudonym in labels or log lines.
    stderr = log.read_text(errors="replace")
    assert "worker stopped after" in stderr and "partitions assigned" in stderr
    patient_ids = {str(obj.get("patient_id")) for _, obj in labelled if obj.get("patient_id")}
    pseudonyms = {
        row[0] for row in pipeline.query("SELECT DISTINCT patient_pseudonym FROM events") if row[0]
    }
    secrets: set[Any] = {p for p in patient_ids | pseudonyms if len(p) >= 6}
    assert secrets
    leaked = [s for s in secrets if s in metrics_text or s in stderr]
    assert not leaked, f"{len(leaked)} identifiers in metrics or logs, e.g. {leaked[:1]}"
