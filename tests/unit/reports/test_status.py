"""portal-pulse status: one screen from a worker's /status."""

from __future__ import annotations

import json
from pathlib import Path

from portal_pulse.reports.status import render_status, worker_url

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


def test_the_worker_is_found_by_option_then_address_file_then_settings(tmp_path: Path) -> None:
    address = tmp_path / "chdb.worker.json"
    default = "http://127.0.0.1:6066"
    assert worker_url(None, address, default) == default
    address.write_text(json.dumps({"url": "http://127.0.0.1:40001", "pid": 1}))
    assert worker_url(None, address, default) == "http://127.0.0.1:40001"
    assert worker_url("http://w:6066/", address, default) == "http://w:6066"
