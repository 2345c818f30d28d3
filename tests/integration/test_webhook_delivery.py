"""The worker delivers alerts to a webhook while it streams, pseudonyms only."""

from __future__ import annotations

import json
import threading
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
