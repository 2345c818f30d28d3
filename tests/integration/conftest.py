"""Integration fixtures: a real Kafka broker (choice order as everywhere) and chDB in subprocesses.

chDB opens one on-disk path per process, so workers, replays and queries of their output each
run in a process of their own; the test process never opens those paths itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portal_pulse.broker import LocalBroker, docker_available

PSEUDONYM_KEY = "integration-test-key-not-a-secret"

# PORTAL_PULSE_TEST_CPU_LOAD=1: the modules that use the ``cpu_load`` fixture run while one busy
# process per core keeps every core at 100 % (tests/loop_suites.py --under-load sets it; CI does
# not). Their liveness bounds (how long a worker may take to start, stop or go idle) stretch by
# LIVENESS_SCALE under it; no result check changes.
CPU_LOAD = os.environ.get("PORTAL_PULSE_TEST_CPU_LOAD", "").lower() in {"1", "true", "yes"}
LIVENESS_SCALE = 3.0 if CPU_LOAD else 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS → testcontainers (Docker) → a native KRaft broker on loopback."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        from portal_pulse.broker import KAFKA_VERSION

        with KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    port = free_port()
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), port=port, controller_port=free_port())
    bootstrap = broker.start(timeout=120)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def cpu_load() -> Iterator[int]:
    """Under PORTAL_PULSE_TEST_CPU_LOAD, ``os.cpu_count()`` processes spinning on the CPU for the
    whole module (started before its first test, stopped after its last); yields how many.

    Real contention, not a sleep: the workers, the broker and the replay compete with them for
    every core, so the module's kills and outages meet slow polls, late heartbeats and long
    pauses between a fetch and its processing. On exit each spinner's CPU time is printed, to
    show the load was there."""
    if not CPU_LOAD:
        yield 0
        return
    count = os.cpu_count() or 1
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    began = time.monotonic()
    print(f"\n[cpu-load] {count} busy processes started (one per core)")
    try:
        yield count
    finally:
        wall = time.monotonic() - began
        shares: list[str] = []
        for proc in spinners:
            if proc.poll() is not None:  # reaped already: its CPU time is gone with it
                shares.append(f"none (exited {proc.returncode})")
                continue
            proc.send_signal(signal.SIGKILL)
            # wait4, not Popen.wait: the child's CPU time comes with its exit status.
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL if os.WIFSIGNALED(status) else status
            shares.append(f"{(usage.ru_utime + usage.ru_stime) / wall:.0%}")
        print(
            f"\n[cpu-load] {count} busy processes over {wall:.0f} s used "
            f"{', '.join(shares)} of a core each"
        )


class Pipeline:
    """One isolated pipeline: its own topic prefix, consumer group and chDB directory."""

    def __init__(self, bootstrap: str, root: Path) -> None:
        run = uuid.uuid4().hex[:8]
        self.root = root
        self.chdb = root / "chdb"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PORTAL_PULSE_TOPIC_PREFIX": f"it{run}",
            "PORTAL_PULSE_APP_ID": f"it-{run}",
            "PORTAL_PULSE_DATA_DIR": str(root / "var"),
            "PORTAL_PULSE_CLICKHOUSE_URL": f"chdb://{self.chdb}",
            "PORTAL_PULSE_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "PORTAL_PULSE_SINK_FLUSH_SECONDS": "0.2",
            # Each worker its own free port for /healthz, /readyz, /metrics (the address file
            # beside the chDB path says which).
            "PORTAL_PULSE_WEB_PORT": "0",
        }
        self.prefix = self.env["PORTAL_PULSE_TOPIC_PREFIX"]

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "portal_pulse.cli", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result

    def run_worker(
        self, *, idle: float = 3.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = self.cli("worker", "--exit-when-idle", str(idle), env=env)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    def group_lag(self, role: str = "all") -> dict[tuple[str, int], int]:
        """What the consumer group of ``role`` has not committed on the partitions the role
        reads, against the log ends the broker answers now (not a worker's cached view)."""
        from portal_pulse.roles import group_id
        from portal_pulse.settings import Settings
        from portal_pulse.worker import GroupLag, topics_read

        settings = Settings(topic_prefix=self.prefix, app_id=self.env["PORTAL_PULSE_APP_ID"])
        lag = GroupLag(
            settings,
            self.env["KAFKA_BOOTSTRAP_SERVERS"],
            topics_read(settings, role),
            group=group_id(settings, role),
        )
        try:
            return lag.behind()
        finally:
            lag.close()

    def query(self, sql: str, chdb: Path | None = None) -> list[list[Any]]:
        return query_chdb(chdb or self.chdb, [sql])[0]


def query_chdb(path: Path, sqls: list[str]) -> list[list[list[Any]]]:
    """Run queries against a chDB path in a fresh process; values come back JSON-encoded."""
    script = textwrap.dedent(
        """
        import json, sys
        from sinks.client import connect
        client = connect("chdb://" + sys.argv[1])
        out = [[list(r) for r in client.query(q).result_rows] for q in json.loads(sys.stdin.read())]
        print(json.dumps(out, default=str))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        input=json.dumps(sqls),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Pipeline:
    return Pipeline(kafka_bootstrap, tmp_path)
