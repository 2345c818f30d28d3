"""Helpers for tests that run a worker live, on the wall clock: start it and wait until it is
ready, feed it events as they happen, wait (with a liveness bound, never a verdict) for effects."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.integration.conftest import Pipeline

__all__ = ["iso", "live_worker", "produce", "wait"]


def wait(what: str, done: Callable[[], bool], liveness: float = 180.0) -> None:
    """Poll ``done`` until it holds; fail after ``liveness`` seconds (the test is stuck)."""
    deadline = time.monotonic() + liveness
    while not done():
        assert time.monotonic() < deadline, f"not within {liveness:.0f} s: {what}"
        time.sleep(0.25)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


@contextmanager
def live_worker(pipeline: Pipeline, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A worker (role all) running with ``env`` until the block ends (then SIGTERM); yields the
    PORTAL_PULSE_* settings for the commands run against it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "portal_pulse.cli", "worker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    address = Path(str(pipeline.chdb) + ".worker") / "address.json"

    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            url = json.loads(address.read_text())["url"]
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return False

    try:
        wait("the worker is ready", ready)
        yield {k: v for k, v in env.items() if k.startswith("PORTAL_PULSE_")}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def produce(pipeline: Pipeline, env: dict[str, str], tmp_path: Path, *events: dict) -> None:
    """Send ``events`` now, as a source would (one ``portal-pulse produce`` of a small file)."""
    path = tmp_path / f"batch-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = pipeline.cli("produce", str(path), env=env)
    assert result.returncode == 0, result.stderr
