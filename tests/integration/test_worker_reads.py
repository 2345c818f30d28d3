"""A running worker takes no SQL, path or URL from the network, and its reads need its token.

One worker on the real broker and chDB, bound to 0.0.0.0 with a token from a file:

- ``alerts``, ``followups`` and ``dashboard`` print through it exactly what they print from the
  database once it has stopped (``dashboard`` text and HTML apart from their generation time);
- every hostile request is refused — the old ``POST /query`` with ``file()`` on the pseudonym key
  file, ``INTO OUTFILE``, ``url()`` to a loopback listener, ``s3()``, ``remote()``,
  ``executable()``, ``input()``, comment and string tricks, a ``SETTINGS`` clause; injection in
  every typed parameter of ``/reads``; and a 1 GB body, streamed — and nothing is read, written
  or fetched: the listener gets no connection, the canary directory stays empty, the key is in
  no answer, and the worker's memory does not grow by the body;
- without the token ``/reads`` and ``/status`` answer 401 while ``/healthz``, ``/readyz`` and
  ``/metrics`` answer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from portal_pulse.reports.reads import ENDPOINTS, path_of
from portal_pulse.simulate import SimulationSpec, simulate_labelled
from tests.integration.conftest import Pipeline, free_port

pytestmark = pytest.mark.integration

SPEC = SimulationSpec(practices=2, patients=40, months=2, seed=5)
KEY = "canary-pseudonym-key-3f9c1d7e5a2b4c6d8e0f1a3b5c7d9e1f"
TOKEN = "integration-web-token-0123456789abcdef0123456789"
GIB = 1 << 30

READS = {
    "alerts-table": ("alerts",),
    "alerts-json": ("alerts", "--format", "json"),
    "alerts-csv": ("alerts", "--format", "csv"),
    "alerts-filtered": ("alerts", "--practice", "P001", "--open", "--kind", "sla.breached"),
    "alerts-unknown": ("alerts", "--practice", "P999"),
    "followups-table": ("followups", "--practice", "P001"),
    "followups-json": ("followups", "--practice", "P002", "--format", "json"),
    "followups-csv": ("followups", "--practice", "P001", "--format", "csv", "--limit", "5"),
    "followups-unknown": ("followups", "--practice", "P999"),
    "dashboard-text": ("dashboard", "--practice", "P001", "--month", "2026-02"),
    "dashboard-json": ("dashboard", "--practice", "P002", "--month", "2026-01", "--format", "json"),
    "dashboard-html": ("dashboard", "--practice", "P001", "--month", "2026-02", "--format", "html"),
    "dashboard-empty": ("dashboard", "--practice", "P001", "--month", "2025-06"),
    "dashboard-unknown": ("dashboard", "--practice", "P999", "--month", "2026-01"),
}
_GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d \S+")


def _reads(pipeline: Pipeline) -> dict[str, tuple[int, str, str]]:
    out = {}
    for name, args in READS.items():
        result = pipeline.cli(*args)
        assert "Traceback" not in result.stderr, result.stderr
        out[name] = (result.returncode, _GENERATED.sub("Generated …", result.stdout), result.stderr)
    return out


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _stream(port: int, method: str, path: str, total: int) -> bytes:
    """Send ``total`` body bytes (1 MiB at a time, never held whole) and return the answer."""
    chunk = b"x" * (1 << 20)
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < total:
                conn.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker answered and closed without reading the rest
        conn.settimeout(30)
        try:
            while b"\r\n\r\n" not in answer:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def test_reads_through_the_worker_and_everything_hostile_refused(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    labelled = list(simulate_labelled(SPEC))
    recording = tmp_path / "events.jsonl"
    recording.write_text("".join(json.dumps(obj) + "\n" for _, obj in labelled))
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    token_file = tmp_path / "web.token"
    token_file.write_text(TOKEN + "\n")
    canary_dir = tmp_path / "canary"
    canary_dir.mkdir()
    pipeline.env.pop("PORTAL_PULSE_PSEUDONYM_KEY", None)
    pipeline.env["PORTAL_PULSE_PSEUDONYM_KEY_FILE"] = str(key_file)
    pipeline.env["PORTAL_PULSE_WEB_TOKEN_FILE"] = str(token_file)
    produced = pipeline.cli("produce", str(recording))
    assert produced.returncode == 0, produced.stderr

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    env = {**pipeline.env, "PORTAL_PULSE_WEB_HOST": "0.0.0.0"}
    log = tmp_path / "worker.log"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    canary_port = listener.getsockname()[1]
    with open(log, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "portal_pulse.cli", "worker", "--web-port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    answers: list[bytes] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"never ready: {log.read_text()[-3000:]}")
        directory = pipeline.chdb.with_name(pipeline.chdb.name + ".worker")
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(directory / "address.json").st_mode) == 0o600
        # Let the sinks write everything read so far (the reads compare with the final state).
        wait = pipeline.cli("alerts", "--format", "json")
        assert wait.returncode == 0, wait.stderr

        # (c) The probes answer anyone; reads and status only the token's holder.
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(url + probe, timeout=10).status_code == 200, probe
        for path in ["/status", *(path_of(name) for name in ENDPOINTS)]:
            for headers in (
                {},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": TOKEN},
            ):
                response = httpx.get(url + path, headers=headers, timeout=10)
                answers.append(response.content)
                assert response.status_code == 401, (path, headers, response.status_code)
        assert httpx.get(f"{url}/status", headers=auth, timeout=10).status_code == 200

        # (b) SQL, paths and URLs in every shape: refused.
        hostile_sql = [
            f"SELECT * FROM file('{key_file}', 'LineAsString')",
            f"SELECT 1 INTO OUTFILE '{canary_dir}/x'",
            f"SELECT * FROM url('http://127.0.0.1:{canary_port}/x', 'LineAsString')",
            f"SELECT * FROM s3('http://127.0.0.1:{canary_port}/b/x', 'LineAsString')",
            f"SELECT * FROM remote('127.0.0.1:{canary_port}', system.one)",
            "SELECT * FROM executable('id', 'LineAsString', 'x String')",
            "SELECT * FROM input('x String')",
            f"SELECT 1 /* ; */ UNION ALL SELECT length(line) FROM file('{key_file}', 'LineAsString')",
            f"SELECT '; DROP' AS x, * FROM file('{key_file}', 'LineAsString') -- ;",
            f"SELECT * FROM file('{key_file}', 'LineAsString') SETTINGS readonly = 0",
        ]
        for sql in hostile_sql:
            for method, target in (
                ("POST", "/query"),
                ("GET", "/query"),
                ("POST", "/reads/alerts"),
            ):
                response = httpx.request(
                    method, url + target, json={"sql": sql}, params={"sql": sql}, headers=auth,
                    timeout=10,
                )  # fmt: skip
                answers.append(response.content)
                assert response.status_code in (404, 405), (method, target, response.status_code)
        injections = [
            "P001' OR '1'='1",
            "P001') UNION ALL SELECT * FROM file('" + str(key_file) + "', 'LineAsString') --",
            f"url('http://127.0.0.1:{canary_port}/')",
            f"{canary_dir}/x",
            "2026-01' INTO OUTFILE '" + str(canary_dir) + "/y",
            "1; SELECT 1",
            "true SETTINGS readonly=0",
            "P001\x00",
        ]
        for name, params in ENDPOINTS.items():
            for param in params:
                for text in injections:
                    query = {p.name: _valid(p.type) for p in params if p.required}
                    query[param.name] = text
                    response = httpx.get(
                        url + path_of(name), params=query, headers=auth, timeout=10
                    )
                    answers.append(response.content)
                    assert response.status_code == 400, (name, param.name, text)
            response = httpx.get(
                url + path_of(name), params={"sql": hostile_sql[0]}, headers=auth, timeout=10
            )
            answers.append(response.content)
            assert response.status_code == 400, name
        for path in ("/reads/../query", "/reads/alerts%3BSELECT", "/reads/", "/reads/query"):
            response = httpx.get(url + path, headers=auth, timeout=10)
            answers.append(response.content)
            assert response.status_code in (400, 404, 405), (path, response.status_code)

        # A 1 GB body, streamed: answered without being read or buffered.
        rss_before = _rss_kib(worker.pid)
        for method, path in (("POST", "/query"), ("GET", "/reads/practice-ids")):
            answer = _stream(port, method, path, GIB)
            answers.append(answer)
            assert answer.startswith(b"HTTP/1.1 "), answer[:200]
            assert answer.split(b" ", 2)[1] in (b"200", b"404", b"405"), answer[:200]
        assert _rss_kib(worker.pid) - rss_before < 256 * 1024, "the body was held in memory"
        assert worker.poll() is None
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

        during = _reads(pipeline)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0, log.read_text()[-3000:]
    connections = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            break
        conn.close()
        connections += 1
    listener.close()
    assert connections == 0, "the worker reached the canary listener"
    assert not list(canary_dir.iterdir()), "the worker wrote into the canary directory"
    assert not [a for a in answers if KEY.encode() in a], "the key file's content was answered"
    assert not (directory / "address.json").exists(), "the address goes when the worker stops"

    # (a) The same bytes through the worker and from the database.
    after = _reads(pipeline)
    for name in READS:
        assert during[name] == after[name], name
    assert during["alerts-unknown"][0] == 4 and during["dashboard-empty"][0] == 4


def _valid(kind: str) -> str:
    return {
        "practice": "P001",
        "month": "2026-01",
        "limit": "5",
        "alert_kind": "sla.breached",
        "kind_prefix": "sla.",
        "bool": "true",
    }[kind]
