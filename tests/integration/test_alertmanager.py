"""A real Alertmanager (Debian's prometheus-alertmanager) receives a live worker's SLA alerts.

The example config (docker/alertmanager/alertmanager.yml) routes them, with each receiver given a
webhook to a local server and group timings of a second. Two practices open around the clock with
minute-scale deadlines (tests/integration/test_late_events_live.py drives the same way):

- R's at-risk alert shows active with the routing labels, routed to the nurse receiver; R's reply
  resolves it: it leaves the active alerts and the nurse receiver is told "resolved";
- W's at-risk alert (billing) is withdrawn by a reply stamped before it fired and delivered after:
  it ends the same way;
- no label or annotation, and no notification, carries a patient id, pseudonym or thread id.

The latency from each at-risk instant plus the hold to Alertmanager showing the alert is printed
for the record (not asserted: the machine is shared).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portal_pulse.pseudonym import Pseudonymizer
from tests.integration.conftest import PSEUDONYM_KEY, Pipeline
from tests.integration.live import live_worker, produce

pytestmark = pytest.mark.integration

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
EXAMPLE = Path(__file__).resolve().parents[2] / "docker" / "alertmanager" / "alertmanager.yml"
HOURS = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
SLA = {
    "internal_target": "4 business minutes",
    "external_promise": "8 business minutes",
    "at_risk_fraction": 0.25,
}  # fmt: skip  -- at risk 1 minute after the message
PRACTICES = {
    "practices": {
        p: {"timezone": "America/Chicago", "hours": HOURS, "holidays": [], "sla": SLA}
        for p in ("AM-R", "AM-W")
    }
}
HOLD = 60.0  # PORTAL_PULSE_SLA_ALERT_HOLD_SECONDS (the default)
LIVENESS = 180.0  # seconds a step may take before the test gives up (never a verdict)
THREADS = {"AM-R": "thread-am-resolve-5c1d", "AM-W": "thread-am-withdraw-9e2b"}
PATIENTS = {"AM-R": "MRN-am-000111", "AM-W": "MRN-am-000222"}
LABELS = {"alertname", "alert_id", "practice_id", "kind", "staff_pool", "category", "severity"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LIVENESS
    while not done():
        assert time.monotonic() < deadline, f"not within {LIVENESS:.0f} s: {what}"
        time.sleep(0.25)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


class Notifications(BaseHTTPRequestHandler):
    """Alertmanager's webhook notifications, by receiver (the path)."""

    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Notifications.received.append((self.path.strip("/"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip(
            "prometheus-alertmanager is not installed (make prometheus-tools, or "
            "apt-get install -y prometheus-alertmanager)"
        )
    Notifications.received = []
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), Notifications)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    config = yaml.safe_load(EXAMPLE.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        url = f"http://127.0.0.1:{hooks.server_port}/{receiver['name']}"
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={path}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("Alertmanager is ready", ready)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        hooks.shutdown()


@pytest.fixture
def worker(
    pipeline: Pipeline, alertmanager: str, tmp_path: Path
) -> Iterator[tuple[Pipeline, dict[str, str]]]:
    practices = tmp_path / "practices.yaml"
    practices.write_text(yaml.safe_dump(PRACTICES))
    env = {
        **pipeline.env,
        "PORTAL_PULSE_PRACTICES_FILE": str(practices),
        "PORTAL_PULSE_ALERTMANAGER_URL": alertmanager,
        "PORTAL_PULSE_ALERTMANAGER_RESEND_SECONDS": "5",
        "PORTAL_PULSE_ALERT_LINK_TEMPLATE": "https://dash.example/d/sla?practice={practice_id}",
        "PORTAL_PULSE_SLA_ALERT_HOLD_SECONDS": str(HOLD),
    }
    with live_worker(pipeline, env) as settings:
        yield pipeline, settings


def _message(practice: str, category: str, at: datetime) -> dict:
    return {"event_id": f"{practice}-m", "event_type": "message.sent", "occurred_at": _iso(at),
            "practice_id": practice, "patient_id": PATIENTS[practice],
            "thread_id": THREADS[practice], "message_id": f"{practice}-m1",
            "category": category}  # fmt: skip


def _reply(practice: str, pool: str, at: datetime) -> dict:
    return {"event_id": f"{practice}-r", "event_type": "message.replied", "occurred_at": _iso(at),
            "practice_id": practice, "patient_id": PATIENTS[practice],
            "thread_id": THREADS[practice], "message_id": f"{practice}-r1",
            "staff_pool": pool}  # fmt: skip


def _active(url: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's active (not ended) alerts by practice."""
    alerts = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    return {a["labels"].get("practice_id", ""): a for a in alerts}


def test_alertmanager_shows_resolves_and_ends_withdrawn_alerts(
    worker: tuple[Pipeline, dict[str, str]], alertmanager: str, tmp_path: Path
) -> None:
    pipeline, env = worker
    t0 = datetime.now(UTC).replace(microsecond=0)
    at_risk = t0 + timedelta(minutes=1)
    produce(pipeline, env, tmp_path, _message("AM-R", "clinical", t0),
             _message("AM-W", "billing", t0))  # fmt: skip

    seen: dict[str, datetime] = {}
    shown: dict[str, dict[str, Any]] = {}

    def both_active() -> bool:
        for practice, alert in _active(alertmanager).items():
            seen.setdefault(practice, datetime.now(UTC))
            shown[practice] = alert
        return {"AM-R", "AM-W"} <= set(seen)

    _wait("both at-risk alerts are active in Alertmanager", both_active)
    for practice, at in sorted(seen.items()):
        latency = (at - (at_risk + timedelta(seconds=HOLD))).total_seconds()
        print(f"\n{practice}: at-risk instant + hold -> active in Alertmanager: {latency:.2f} s")

    for practice, pool, category in (("AM-R", "nurse", "clinical"), ("AM-W", "billing", "billing")):
        alert = shown[practice]
        assert set(alert["labels"]) == LABELS
        assert alert["labels"]["alertname"] == "PortalPulseSlaAtRisk"
        assert alert["labels"]["kind"] == "sla.at_risk"
        assert alert["labels"]["severity"] == "warning"
        assert (alert["labels"]["staff_pool"], alert["labels"]["category"]) == (pool, category)
        assert [r["name"] for r in alert["receivers"]] == [pool]  # routed by staff pool
        assert alert["status"]["state"] == "active"
        due = alert["annotations"]["due"]
        assert due.endswith(("CST", "CDT")), due  # the practice's zone
        assert alert["annotations"]["link"].endswith(f"practice={practice}")
    _wait(
        "the receivers are notified of both alerts",
        lambda: (
            {p for p, n in Notifications.received if n["status"] == "firing"}
            >= {"nurse", "billing"}
        ),
    )

    # R: replied now, after its alert fired: resolved. W: a reply stamped before its at-risk
    # instant, delivered after the alert fired: withdrawn.
    produce(pipeline, env, tmp_path, _reply("AM-R", "nurse", datetime.now(UTC)),
             _reply("AM-W", "billing", at_risk - timedelta(seconds=10)))  # fmt: skip
    _wait("both alerts leave the active ones", lambda: not _active(alertmanager))
    _wait(
        "the receivers are told both alerts resolved",
        lambda: (
            {p for p, n in Notifications.received if n["status"] == "resolved"}
            >= {"nurse", "billing"}
        ),
    )
    ended = {
        n["alerts"][0]["labels"]["practice_id"]: n["alerts"][0]
        for _, n in Notifications.received
        if n["status"] == "resolved"
    }
    assert ended["AM-R"]["annotations"]["status"] == "resolved"
    assert ended["AM-W"]["annotations"]["status"] == "withdrawn"
    assert "should not have fired" in ended["AM-W"]["annotations"]["withdrawn"]
    assert {p for p, _ in Notifications.received} <= {"nurse", "billing"}

    everything = json.dumps([shown, Notifications.received])
    pseudonyms = [Pseudonymizer(PSEUDONYM_KEY.encode())(p, m) for p, m in PATIENTS.items()]
    for secret in (*PATIENTS.values(), *THREADS.values(), *pseudonyms, "MRN-"):
        assert secret not in everything
