"""SPEC §7.1 live, on the wall clock: a practice open around the clock with minute-scale
deadlines, a real worker and a webhook receiver.

- a reply stamped before its at-risk instant and delivered within the hold pages nobody;
- one delivered after the alert fired withdraws it: the webhook receives the raise, then the
  withdrawal;
- a message delivered minutes late raises its (already passed) alerts at once;
- a reply delivered before its message still makes one response fact.

The hold is the default 60 s; each delivery that must beat a deadline has about 50 s to spare.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Pipeline
from tests.integration.live import iso, live_worker, produce, wait

pytestmark = pytest.mark.integration

PRACTICES = """\
practices:
  LIVE:
    timezone: UTC
    hours: {mon: "00:00-24:00", tue: "00:00-24:00", wed: "00:00-24:00", thu: "00:00-24:00",
            fri: "00:00-24:00", sat: "00:00-24:00", sun: "00:00-24:00"}
    holidays: []
    sla:
      internal_target: "2 business minutes"
      external_promise: "4 business minutes"
      at_risk_fraction: 0.5
"""


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _events(thread: str) -> list[tuple[str, str]]:
    return [(a["kind"], a["event"]) for a in Hook.received if a["subject_id"] == thread]


@pytest.fixture
def worker(pipeline: Pipeline, tmp_path: Path) -> Iterator[tuple[Pipeline, dict[str, str]]]:
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    practices = tmp_path / "practices.yaml"
    practices.write_text(PRACTICES)
    env = {
        **pipeline.env,
        "PORTAL_PULSE_PRACTICES_FILE": str(practices),
        "PORTAL_PULSE_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook",
        "PORTAL_PULSE_SLA_ALERT_HOLD_SECONDS": "60",
    }
    try:
        with live_worker(pipeline, env) as settings:
            yield pipeline, settings
    finally:
        server.shutdown()


def _message(eid: str, thread: str, at: datetime) -> dict:
    return {"event_id": eid, "event_type": "message.sent", "occurred_at": iso(at),
            "practice_id": "LIVE", "patient_id": f"MRN-{thread}", "thread_id": thread,
            "message_id": f"m-{eid}", "category": "clinical"}  # fmt: skip


def _reply(eid: str, thread: str, at: datetime) -> dict:
    return {"event_id": eid, "event_type": "message.replied", "occurred_at": iso(at),
            "practice_id": "LIVE", "patient_id": f"MRN-{thread}", "thread_id": thread,
            "message_id": f"r-{eid}", "staff_pool": "nurse"}  # fmt: skip


def test_late_replies_on_the_wall_clock(
    worker: tuple[Pipeline, dict[str, str]], tmp_path: Path
) -> None:
    pipeline, env = worker
    t0 = datetime.now(UTC).replace(microsecond=0)
    at_risk = t0 + timedelta(minutes=1)  # half of the 2-minute internal target
    produce(
        pipeline, env, tmp_path,
        _message("a1", "A", t0),
        _message("b1", "B", t0),
        # C: written five minutes ago, delivered now: every deadline has passed.
        _message("c1", "C", t0 - timedelta(minutes=5)),
        # D: the reply arrives first, its message afterwards.
        _reply("d2", "D", t0 - timedelta(seconds=20)),
    )  # fmt: skip
    produce(pipeline, env, tmp_path, _message("d1", "D", t0 - timedelta(seconds=30)))
    wait(
        "C's passed deadlines are raised at once",
        lambda: (
            {k for k, e in _events("C") if e == "raised"}
            >= {"sla.at_risk", "sla.internal_missed", "sla.breached"}
        ),
    )
    # A: stamped 10 s before the at-risk instant, delivered 10 s after it: within the hold.
    wait("the at-risk instant passes", lambda: datetime.now(UTC) >= at_risk + timedelta(seconds=10))
    produce(pipeline, env, tmp_path, _reply("a2", "A", at_risk - timedelta(seconds=10)))
    # B: its at-risk alert fires (the hold passed without a reply), then the reply comes.
    wait("B's at-risk alert fires", lambda: ("sla.at_risk", "raised") in _events("B"))
    assert not _events("A"), "a reply delivered within the hold pages nobody"
    produce(pipeline, env, tmp_path, _reply("b2", "B", at_risk - timedelta(seconds=10)))
    wait("B's at-risk alert is withdrawn", lambda: ("sla.at_risk", "withdrawn") in _events("B"))

    assert not _events("A")
    assert _events("B") == [("sla.at_risk", "raised"), ("sla.at_risk", "withdrawn")]
    assert not _events("D")
    assert "MRN-" not in json.dumps(Hook.received)

    # Through the worker's read endpoint: B's withdrawn alert is listed only when asked for.
    shown = pipeline.cli("alerts", "--practice", "LIVE", "--withdrawn", "show", "--format", "json",
                         env=env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    rows = {(r["subject_id"], r["kind"]): r for r in json.loads(shown.stdout)}
    assert rows[("B", "sla.at_risk")]["withdrawn_at"] is not None
    assert {k for t, k in rows if t == "C"} == {
        "sla.at_risk",
        "sla.internal_missed",
        "sla.breached",
    }
    assert not [key for key in rows if key[0] in ("A", "D")]
    standing = pipeline.cli("alerts", "--practice", "LIVE", "--format", "json", env=env)
    assert ("B", "sla.at_risk") not in {
        (r["subject_id"], r["kind"]) for r in json.loads(standing.stdout)
    }
