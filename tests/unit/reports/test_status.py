"""portal-pulse status: one screen from a worker's /status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portal_pulse.errors import UserError
from portal_pulse.reports.status import render_status, status_token, worker_url
from sinks.remote import ADDRESS_FILE, make_private_dir, worker_token, write_private

STATUS = {
    "ready": False,
    "reasons": ["2 partitions more than 1000 messages behind (worst p.raw.ehr:1, 5000 behind)"],
    "uptime_seconds": 3725.0,
    "assigned_partitions": 40,
    "lag_by_topic": {"p.raw.ehr": 5400, "p.events.clean": 0},
    "event_clocks": {"0": {"event_time": "2026-03-01T05:51:50+00:00", "behind_seconds": 90.0}},
    "events_per_second": 1234.5,
    "events": {"clean": 10000, "dead_letter": 12, "duplicate": 3},
    "dead_letters_by_reason": {"bad_enum": 7, "missing_field": 5},
    "open_alerts_by_kind": {"sla.breached": 2},
    "last_error": None,
}


def test_the_screen_says_why_not_ready_and_what_is_behind() -> None:
    text = render_status(STATUS, "http://127.0.0.1:6066")
    lines = text.splitlines()
    assert lines[0].startswith("worker http://127.0.0.1:6066: NOT READY (up 62min, 40 partitions")
    assert "why not ready: 2 partitions more than 1000 messages behind" in text
    assert "events/s (last minute): 1,234.5" in text
    assert any("p.raw.ehr" in ln and "5,400" in ln for ln in lines)
    assert "partition 0   2026-03-01T05:51:50+00:00" in text and "90s behind" in text
    assert "dead letters since start: bad_enum 7, missing_field 5" in text
    assert "open alerts: sla.breached 2" in text and "last error: none" in text


def test_the_worker_is_found_by_option_then_its_private_directory_then_settings(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "chdb.worker"
    default = "http://127.0.0.1:6066"
    assert worker_url(None, directory, default) == default
    make_private_dir(directory)
    write_private(directory / ADDRESS_FILE, json.dumps({"url": "http://127.0.0.1:40001", "pid": 1}))
    assert worker_url(None, directory, default) == "http://127.0.0.1:40001"
    assert worker_url("http://w:6066/", directory, default) == "http://w:6066"
    (directory / ADDRESS_FILE).chmod(0o644)
    with pytest.raises(UserError, match="has mode 0644, not 0600"):
        worker_url(None, directory, default)


def test_the_workers_own_token_goes_to_a_worker_on_this_host_only(tmp_path: Path) -> None:
    directory = tmp_path / "chdb.worker"
    token = worker_token(None, directory)
    assert status_token(None, directory, "http://127.0.0.1:6066") == token
    assert status_token(None, directory, "http://[::1]:6066") == token
    assert status_token(None, directory, "http://elsewhere.example:6066") is None
    assert status_token("x" * 32, directory, "http://elsewhere.example:6066") == "x" * 32
    assert status_token(None, tmp_path / "absent", "http://127.0.0.1:6066") is None
