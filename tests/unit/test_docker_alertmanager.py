"""docker/alertmanager/alertmanager.yml and its compose service: SLA alerts routed by staff pool,
grouped per practice and kind, checked by Debian's amtool when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from portal_pulse.domain.followups import FOLLOWUP_KINDS, FOLLOWUP_STAFF_POOL
from portal_pulse.domain.sla import ALERT_KINDS
from portal_pulse.notify.describe import alert_name

DOCKER = Path(__file__).resolve().parents[2] / "docker"
CONFIG = DOCKER / "alertmanager" / "alertmanager.yml"
AMTOOL = shutil.which("amtool")
POOLS = ("nurse", "front_desk", "billing")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def test_routes_cover_the_three_pools_and_group_per_practice(config: dict[str, Any]) -> None:
    route = config["route"]
    assert route["group_by"] == ["practice_id", "kind"]
    by_pool = {
        m.split("=", 1)[1].strip('"'): r["receiver"]
        for r in route["routes"]
        for m in r.get("matchers", [])
        if m.startswith("staff_pool=")
    }
    assert by_pool == {pool: pool for pool in POOLS}
    receivers = {r["name"] for r in config["receivers"]}
    assert {*POOLS, route["receiver"]} <= receivers
    # resolve_timeout leaves room for three resends at the default period (60 s).
    assert config["global"]["resolve_timeout"] == "5m"


def _routed(*labels: str) -> str:
    assert AMTOOL is not None
    result = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={CONFIG}", *labels],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (make prometheus-tools)")
def test_amtool_accepts_the_config_and_routes_every_kind_by_pool() -> None:
    result = subprocess.run(
        [AMTOOL, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in ALERT_KINDS:
        for pool in POOLS:
            labels = [f"alertname={alert_name(kind)}", f"kind={kind}", f"staff_pool={pool}",
                      "practice_id=P1", "severity=critical"]  # fmt: skip
            assert _routed(*labels) == pool
        assert _routed(f"alertname={alert_name(kind)}", "staff_pool=provider") == "practice-ops"
    for kind in FOLLOWUP_KINDS:
        labels = (f"alertname={alert_name(kind)}", f"staff_pool={FOLLOWUP_STAFF_POOL}")
        assert _routed(*labels) == FOLLOWUP_STAFF_POOL
    # The pipeline's own alerts (Prometheus rules) go to the pipeline's operators.
    assert _routed("alertname=PortalPulseWorkerDown", "severity=critical") == "pipeline-ops"


def test_compose_runs_alertmanager_with_the_config_and_points_the_worker_at_it() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    service = compose["services"]["alertmanager"]
    assert service["image"].startswith("prom/alertmanager:")
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in service["command"]
    assert (
        "./alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in (service["volumes"])
    )
    for name in ("worker", "process"):
        env = compose["services"][name]["environment"]
        assert env["PORTAL_PULSE_ALERTMANAGER_URL"] == "http://alertmanager:9093"
