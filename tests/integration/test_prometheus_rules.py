"""A real Prometheus scrapes a running worker and evaluates the pipeline's rules on it.

Debian's ``prometheus`` on a free port, with its own config and data directory, scrapes the
worker's /metrics every second and evaluates a copy of ``docker/prometheus/rules/`` made by this
test from the real file: the same expressions, labels and annotations, only every ``for:`` cut
to 1 s so the test need not wait minutes.

The condition: the worker stops (``up == 0``), and ``PortalPulseWorkerDown`` fires in
``/api/v1/alerts``; started again, it clears. (Making ClickHouse unreachable instead does not
keep a worker running here: a worker whose ClickHouse does not answer at start exits 3, which is
the same worker-down condition; with the embedded chDB there is no server to take away.)
While it runs, every metric family of the contract has a sample in Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portal_pulse.metrics import METRIC_NAMES, PipelineMetrics
from portal_pulse.simulate import SimulationSpec, simulate_labelled
from tests.integration.conftest import Pipeline, free_port

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "rules"
PROMETHEUS = shutil.which("prometheus")
SPEC = SimulationSpec(practices=1, patients=30, months=1, seed=19, bad_fraction=0.02)
JOB = "portal-pulse-worker"  # the compose job name: the rule's own job matchers apply


def _rules_with_short_for(target: Path) -> list[str]:
    """The real rules file with every ``for:`` set to 1 s; the alert names."""
    rules = yaml.safe_load((RULES / "portal-pulse.rules.yml").read_text())
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
            names.append(rule["alert"])
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return names


def _get(url: str, **params: str) -> Any | None:
    try:
        response = httpx.get(url, params=params, timeout=5.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5.0).status_code
    except httpx.HTTPError:
        return None


def _series_names() -> dict[str, str]:
    """Each contract family → a series Prometheus stores for it (a histogram's ``_bucket``)."""
    kinds = {f.name: f.type for f in PipelineMetrics().registry.collect()}
    return {
        name: name + "_bucket" if kinds.get(name) == "histogram" else name for name in METRIC_NAMES
    }


def _alerts(prom: str) -> list[dict[str, Any]]:
    body = _get(f"{prom}/api/v1/alerts")
    assert body is not None and body["status"] == "success", body
    return body["data"]["alerts"]


def _worker_down(prom: str, instance: str) -> dict[str, Any] | None:
    for alert in _alerts(prom):
        labels = alert["labels"]
        if labels["alertname"] == "PortalPulseWorkerDown" and labels["instance"] == instance:
            return alert
    return None


def _wait_for(check: Any, seconds: float) -> Any:
    """Poll ``check`` until it returns something truthy (a liveness bound, not a timing test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    return None


def _wait(what: str, check: Any, seconds: float, *, log: Path | None = None) -> Any:
    got = _wait_for(check, seconds)
    if got:
        return got
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"{what} within {seconds:.0f}s\n{tail}")


def _start_worker(pipeline: Pipeline, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "portal_pulse.cli", "worker", "--web-port", str(port)],
            env=pipeline.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_worker_down_fires_in_prometheus_and_clears_after_restart(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    if PROMETHEUS is None:
        pytest.skip(
            "prometheus is not installed (Debian package `prometheus`: make prometheus-tools)"
        )
    labelled = list(simulate_labelled(SPEC))
    recording = tmp_path / "events.jsonl"
    recording.write_text("".join(json.dumps(obj) + "\n" for _, obj in labelled))
    produced = pipeline.cli("produce", str(recording))
    assert produced.returncode == 0, produced.stderr
    patient_ids = {
        obj["patient_id"] for _, obj in labelled if isinstance(obj.get("patient_id"), str)
    }

    port, prom_port = free_port(), free_port()
    worker_url, prom = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{prom_port}"
    instance = f"127.0.0.1:{port}"
    rules_file = tmp_path / "portal-pulse.rules.yml"
    names = _rules_with_short_for(rules_file)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_file)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [instance]}],
                    }
                ],
            }
        )
    )
    worker_log, prom_log = tmp_path / "worker.log", tmp_path / "prometheus.log"
    worker = _start_worker(pipeline, port, worker_log)
    with open(prom_log, "wb") as err:
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait(
            "the worker ready", lambda: _status(f"{worker_url}/readyz") == 200, 180, log=worker_log
        )
        rules = _wait(
            "Prometheus loaded the rules",
            lambda: _get(f"{prom}/api/v1/rules"),
            60,
            log=prom_log,
        )
        loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert loaded == set(names)

        # 1. Running: every family of the contract has a sample in Prometheus (the counters
        #    initialised at 0 included), and the worker-down rule is quiet.
        series, absent = _series_names(), list(METRIC_NAMES)

        def all_sampled() -> bool:
            absent[:] = [
                name
                for name in METRIC_NAMES
                if not (body := _get(f"{prom}/api/v1/query", query=f"count({series[name]})"))
                or not body["data"]["result"]
            ]
            return not absent

        if not _wait_for(all_sampled, 60):
            pytest.fail(f"no sample in Prometheus of {absent}")
        zero = _get(
            f"{prom}/api/v1/query",
            query='portal_pulse_sink_errors_total{table="events"} + '
            'on() group_left sum(portal_pulse_webhook_deliveries_total{outcome="gave_up"})',
        )
        assert zero is not None and zero["data"]["result"], "initialised counters, at 0"
        assert float(zero["data"]["result"][0]["value"][1]) == 0
        assert _worker_down(prom, instance) is None
        healthy = sorted({a["labels"]["alertname"] for a in _alerts(prom)})

        # 2. The worker stops: up == 0, and the rule fires (for: 1s in this copy).
        _stop(worker)
        assert worker.returncode == 0, worker_log.read_text()[-3000:]
        fired = _wait(
            "PortalPulseWorkerDown firing",
            lambda: (a := _worker_down(prom, instance)) and a["state"] == "firing" and a,
            60,
            log=prom_log,
        )
        assert fired["labels"] == {
            "alertname": "PortalPulseWorkerDown",
            "job": JOB,
            "instance": instance,
            "severity": "page",
        }
        assert fired["annotations"]["runbook_url"] == "docs/operations.md#portalpulseworkerdown"
        assert instance in fired["annotations"]["summary"]

        # 3. Started again on the same port: the target is up and the alert clears.
        worker = _start_worker(pipeline, port, worker_log)
        _wait(
            "PortalPulseWorkerDown cleared",
            lambda: _worker_down(prom, instance) is None,
            180,
            log=worker_log,
        )
        everything = json.dumps(_alerts(prom)) + json.dumps(fired)
        print(f"\nalerts while healthy (for: 1s): {healthy}; fired: {fired['labels']}")
    finally:
        _stop(worker)
        _stop(prometheus)
    # No patient id or pseudonym in any label or annotation.
    assert not any(pid in everything for pid in patient_ids)
    assert not re.search(r"[0-9a-f]{32}", everything)
