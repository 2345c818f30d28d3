"""produce and worker against a real broker, the way a user names it.

``--bootstrap-servers`` wins over ``KAFKA_BOOTSTRAP_SERVERS``; with neither, the native broker's
port is used when something answers there (and no broker is ever started); a recording with a
line that is not UTF-8 is produced and processed with that line dead-lettered, the rest goes on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import PSEUDONYM_KEY, query_chdb

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(root: Path, **extra: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PORTAL_PULSE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(
        {
            "PORTAL_PULSE_TOPIC_PREFIX": f"cli{run}",
            "PORTAL_PULSE_APP_ID": f"cli-{run}",
            "PORTAL_PULSE_DATA_DIR": str(root / "var"),
            "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{root / 'chdb'}",
            "PORTAL_PULSE_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "PORTAL_PULSE_SINK_FLUSH_SECONDS": "0.2",
            "PORTAL_PULSE_BROKER_PORT": str(_free_port()),
        }
    )
    env.update(extra)
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "portal_pulse.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _recording(path: Path) -> Path:
    events = [
        {"event_id": f"u{i}", "event_type": "portal.login", "occurred_at": f"2026-01-05T1{i}:00:00Z",
         "practice_id": "PU", "patient_id": f"MRN-U-{i}", "channel": "web"}
        for i in range(4)
    ]  # fmt: skip
    lines = [json.dumps(e).encode() for e in events]
    lines.insert(2, b'{"event_id": "latin1", "event_type": "portal.login", "note": "caf\xe9"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bootstrap_option_wins_and_a_non_utf8_line_is_one_dead_letter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    env = _env(tmp_path, KAFKA_BOOTSTRAP_SERVERS=dead)
    recording = _recording(tmp_path / "events.jsonl")

    produced = _cli(env, "produce", str(recording), "--bootstrap-servers", kafka_bootstrap)
    assert produced.returncode == 0, produced.stderr[-2000:]
    assert f"produced 4 valid events and 1 invalid lines to {kafka_bootstrap}" in produced.stdout
    assert "line 3: line is not UTF-8 (bad_encoding)" in produced.stdout
    assert "Traceback" not in produced.stderr

    worker = _cli(env, "worker", "--exit-when-idle", "3", "--bootstrap-servers", kafka_bootstrap)
    assert worker.returncode == 0, worker.stderr[-2000:]
    events, dead_letters = query_chdb(
        tmp_path / "chdb",
        [
            "SELECT count() FROM events",
            "SELECT reason, count() FROM dead_letters FINAL GROUP BY reason",
        ],
    )
    assert events == [[4]]
    assert dead_letters == [["bad_encoding", 1]]


def test_without_configuration_the_native_port_is_used_if_a_broker_answers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or "," in kafka_bootstrap:
        pytest.skip("the broker under test is not a single loopback address")
    env = _env(tmp_path, PORTAL_PULSE_BROKER_PORT=port)
    produced = _cli(env, "produce", str(_recording(tmp_path / "events.jsonl")))
    assert produced.returncode == 0, produced.stderr[-2000:]
    assert f"to 127.0.0.1:{port}" in produced.stdout
    assert not (tmp_path / "var" / "kafka").exists()  # nothing assembled or started
