"""The README's first command, as a user runs it (smaller): it must end with dashboards."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(pipeline: Pipeline) -> None:
    env = {"PORTAL_PULSE_PSEUDONYM_KEY": "", "PORTAL_PULSE_CLICKHOUSE_URL": ""}
    result = pipeline.cli(
        "demo", "--practices", "2", "--patients", "60", "--months", "2", env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "using a demo key" in out, "no key configured: the demo makes one and says so"
    assert "== events in ClickHouse:" in out
    assert "== dead letters:" in out
    assert "realistic arrival order" in out
    assert "== Late and out-of-order events" in out
    assert "== Dashboard P001 (2026-02)" in out and "== Dashboard P002 (2026-02)" in out
    assert "Portal Performance - February 2026" in out
    assert "MRN-" not in out, "no raw patient identifier in what the demo prints"
