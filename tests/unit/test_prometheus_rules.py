"""The pipeline's Prometheus rules, checked and run by Prometheus's own promtool.

``promtool check rules`` parses every expression and template; ``promtool test rules`` runs the
series fixtures of ``portal-pulse.rules.test.yml``, where every rule must fire on the condition
it names and stay quiet on a healthy series (this module checks that the fixtures cover every
rule both ways).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "rules"
RULES = RULES_DIR / "portal-pulse.rules.yml"
RULE_TESTS = RULES_DIR / "portal-pulse.rules.test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package `prometheus`: make prometheus-tools)",
)


def _alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"]}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_names())} rules found" in result.stdout


@needs_promtool
def test_every_rule_fires_on_its_condition_and_stays_quiet_when_healthy() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_fixtures_cover_every_rule_firing_and_quiet() -> None:
    """Without this, a rule left out of the test file would pass ``promtool test rules``."""
    spec = yaml.safe_load(RULE_TESTS.read_text())
    assert spec["rule_files"] == [RULES.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
            for alert in check["exp_alerts"]:
                assert alert["exp_annotations"]["runbook_url"].endswith(
                    "#" + check["alertname"].lower()
                )
    names = _alert_names()
    assert fired == names, f"never seen firing: {sorted(names - fired)}"
    assert quiet == names, f"never seen quiet: {sorted(names - quiet)}"


@needs_promtool
def test_promtool_test_fails_when_a_rule_does_not_fire(tmp_path: Path) -> None:
    """The fixtures can fail: with one rule's bound raised out of reach, its case fails."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "PortalPulseEventClockBehind":
                rule["expr"] = rule["expr"].replace("> 900", "> 90000")
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "PortalPulseEventClockBehind" in result.stdout + result.stderr
