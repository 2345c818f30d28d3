"""The worker delivers alerts to a webhook while it streams, pseudonyms only, and a hostile
receiver (trickled replies, huge bodies) stalls no other alert; plain http:// can be refused."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

RECORDING = [
    ("e1", "portal.enrolled", "2026-01-05T14:00:00Z", {"method": "in_office"}),
    (
        "e2",
        "message.sent",
        "2026-01-05T15:00:00Z",
        {"thread_id": "t1", "message_id": "m1", "category": "billing"},
    ),
    (
        "e3",
        "message.replied",
        "2026-01-07T15:00:00Z",
        {"thread_id": "t1", "message_id": "r1", "staff_pool": "billing"},
    ),
    ("e4", "patient.seen", "2026-01-30T15:00:00Z", {"encounter_id": "v1"}),
]


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []
    failures_left = 2  # the first deliveries fail: the notifier must retry

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.failures_left > 0:
            Receiver.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        Receiver.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alerts_reach_the_webhook_with_retries(pipeline: Pipeline, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lines = [
            json.dumps({"event_id": eid, "event_type": kind, "occurred_at": at, "practice_id": "PW",
                        "patient_id": "MRN-WEBHOOK-1", **details})
            for eid, kind, at, details in RECORDING
        ]  # fmt: skip
        recording = tmp_path / "events.jsonl"
        recording.write_text("\n".join(lines) + "\n")
        assert pipeline.cli("produce", str(recording)).returncode == 0
        pipeline.run_worker(
            env={"PORTAL_PULSE_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook"}
        )
    finally:
        server.shutdown()
    got = Receiver.received
    kinds = {(a["kind"], a["event"]) for a in got}
    # The unanswered billing message breached and was then answered; the new enrollment never
    # logged in within a week and has no app after two weeks.
    assert {("sla.breached", "raised"), ("sla.breached", "resolved")} <= kinds
    assert ("enrollment.no_first_login", "raised") in kinds
    assert ("enrollment.app_not_installed", "raised") in kinds
    assert all(a["staff_pool"] == "billing" for a in got if a["kind"].startswith("sla."))
    assert "MRN-WEBHOOK-1" not in json.dumps(got)
    assert all(len(a["patient_pseudonym"]) == 32 for a in got)


HUGE_KIND = "enrollment.app_not_installed"


class Hostile(BaseHTTPRequestHandler):
    """A receiver at its worst: an ``enrollment.app_not_installed`` gets a 400 MB body, the first
    other request is answered one byte a second (a server that never trips a per-read timeout),
    everything else a prompt 204. ``log`` keeps what happened, in order."""

    log: list[tuple[str, str]] = []
    attempts: dict[str, int] = {}
    body_bytes_sent = 0
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = f"{body['kind']}:{body['alert_id']}:{body['event']}"
        huge = key.startswith(HUGE_KIND)
        with Hostile.lock:
            first = not huge and all(k.startswith(HUGE_KIND) for _, k in Hostile.log)
            Hostile.attempts[key] = Hostile.attempts.get(key, 0) + 1
            Hostile.log.append(("request", key))
        try:
            if first:
                self._trickle(key)
            elif huge:
                self._huge(key)
            else:
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with Hostile.lock:
                    Hostile.log.append(("answered", key))
        except ConnectionError:
            with Hostile.lock:
                Hostile.log.append(("client hung up", key))
            self.close_connection = True

    def _trickle(self, key: str) -> None:
        for byte in b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n":
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(1.0)  # the pace of the trickle, not a guard
        with Hostile.lock:
            Hostile.log.append(("trickle finished", key))

    def _huge(self, key: str) -> None:
        total, block = 400 * 2**20, b"x" * 65_536
        self.send_response(200)
        self.send_header("Content-Length", str(total))
        self.end_headers()
        sent = 0
        try:
            while sent < total:
                self.wfile.write(block)
                sent += len(block)
        finally:
            with Hostile.lock:
                Hostile.body_bytes_sent += sent
        with Hostile.lock:
            Hostile.log.append(("body sent in full", key))

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up leaves a broken pipe behind; that is the point here."""


def test_a_hostile_receiver_neither_stalls_other_alerts_nor_fills_memory(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    server = _QuietServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lines = [
            json.dumps({"event_id": eid, "event_type": kind, "occurred_at": at, "practice_id": "PH",
                        "patient_id": "MRN-WEBHOOK-2", **details})
            for eid, kind, at, details in RECORDING
        ]  # fmt: skip
        recording = tmp_path / "events.jsonl"
        recording.write_text("\n".join(lines) + "\n")
        assert pipeline.cli("produce", str(recording)).returncode == 0
        result = pipeline.run_worker(
            idle=8.0,
            env={
                "PORTAL_PULSE_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook",
                "PORTAL_PULSE_WEBHOOK_TIMEOUT_SECONDS": "4",
            },
        )
    finally:
        server.shutdown()
    log = list(Hostile.log)
    print("\n".join(f"{what}: {key}" for what, key in log))
    slow = next(key for _, key in log if not key.startswith(HUGE_KIND))
    first, retry = [i for i, entry in enumerate(log) if entry == ("request", slow)][:2]
    # The trickled attempt was abandoned at the deadline (the server saw the client hang up, not
    # a reply finished), retried and delivered...
    assert ("client hung up", slow) in log and ("trickle finished", slow) not in log
    assert ("answered", slow) in log[retry:]
    # ...and other alerts were delivered while it trickled.
    assert any(what == "answered" for what, _ in log[first:retry])
    # The 400 MB reply counted as delivered, cut after the body bound.
    huge = [key for _, key in log if key.startswith(HUGE_KIND)]
    assert huge and ("client hung up", huge[0]) in log
    assert ("body sent in full", huge[0]) not in log
    assert Hostile.body_bytes_sent < 50 * 2**20
    # A resolution never overtakes its raise.
    for what, key in log:
        if what == "request" and key.endswith(":resolved"):
            raised = key.removesuffix(":resolved") + ":raised"
            assert log.index(("answered", raised)) < log.index((what, key))
    kinds = {key.split(":")[0] for what, key in log if what == "answered"}
    assert {"sla.breached", "enrollment.no_first_login"} <= kinds
    # Both cut-offs are in the worker's log, by alert id and kind only.
    assert "passed its 4s deadline: connection closed" in result.stderr
    assert "is over 65536 bytes: stopped reading, connection closed" in result.stderr
    assert "MRN-WEBHOOK-2" not in result.stderr


def test_plain_http_webhook_is_refused_when_tls_is_required(pipeline: Pipeline) -> None:
    result = pipeline.cli(
        "worker",
        "--exit-when-idle",
        "1",
        env={
            "PORTAL_PULSE_WEBHOOK_URL": "http://pager.example.org/hooks/s3cret-token",
            "PORTAL_PULSE_WEBHOOK_REQUIRE_TLS": "true",
        },
    )
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()
    assert len(message) <= 2
    assert "PORTAL_PULSE_WEBHOOK_REQUIRE_TLS" in message[0]
    assert "s3cret-token" not in result.stderr
