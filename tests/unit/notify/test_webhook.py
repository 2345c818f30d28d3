"""WebhookNotifier against a real HTTP server on loopback: delivery, retries, give-up, PHI."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from portal_pulse.domain.records import Alert
from portal_pulse.notify.webhook import WebhookNotifier, alert_payload
from portal_pulse.pseudonym import Pseudonymizer
from portal_pulse.reports.alerts import ALERT_FIELDS

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RAW_MRN = "MRN-00012345"
PSEUDONYM = Pseudonymizer(b"unit-test-key-not-a-secret")("practice-w", RAW_MRN)


class Recorder:
    """What the server saw and what it answers: ``script`` first, then ``default``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[tuple[int, dict[str, str], float]] = []  # status, headers, delay
        self.default = 200
        self.url = ""

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for b in self.raw]

    def answer(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], float]:
        with self.lock:
            self.raw.append(body)
            self.headers.append(headers)
            return self.script.pop(0) if self.script else (self.default, {}, 0.0)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out leaves a broken pipe behind; that is expected here."""


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, extra, delay = rec.answer(body, {k.lower(): v for k, v in self.headers.items()})
            if delay:
                time.sleep(delay)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = _QuietServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def sla_alert(n: int = 0, **changes: Any) -> Alert:
    base = Alert(
        alert_id=f"alert-{n:04d}",
        kind="sla.breached",
        practice_id="practice-w",
        subject_id=f"thread-{n}",
        patient_pseudonym=PSEUDONYM,
        category="clinical",
        staff_pool="nurse",
        due_at=T0 + timedelta(minutes=n),
        raised_at=T0 + timedelta(minutes=n),
        updated_at=T0 + timedelta(minutes=n),
    )
    return Alert(**{**base.as_dict(), **changes})


def notifier(url: str, **kw: Any) -> WebhookNotifier:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("max_attempts", 5)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return WebhookNotifier(url, **kw)


async def deliver(n: WebhookNotifier, *alerts: Alert, drain: float = 10.0) -> None:
    await n.start()
    for alert in alerts:
        n.submit(alert)
    await n.stop(drain_timeout=drain)


def test_delivers_raised_then_resolved_with_exactly_the_spec_fields(server: Recorder) -> None:
    raised = sla_alert()
    resolved = raised.resolve(T0 + timedelta(hours=2, milliseconds=5), business_minutes=125.5)
    n = notifier(server.url)
    asyncio.run(deliver(n, raised, resolved))

    assert n.stats.delivered == 2
    assert n.stats.failed_attempts == n.stats.gave_up == n.stats.dropped == 0
    first, second = server.bodies
    assert set(first) == set(second) == {*ALERT_FIELDS, "event"}
    assert first == {
        "alert_id": "alert-0000",
        "kind": "sla.breached",
        "practice_id": "practice-w",
        "subject_id": "thread-0",
        "patient_pseudonym": PSEUDONYM,
        "category": "clinical",
        "staff_pool": "nurse",
        "due_at": "2026-01-05T09:00:00.000Z",
        "resolved_at": None,
        "response_business_minutes": None,
        "event": "raised",
    }
    assert second["event"] == "resolved"
    assert second["resolved_at"] == "2026-01-05T11:00:00.005Z"
    assert second["response_business_minutes"] == 125.5
    assert server.headers[0]["content-type"] == "application/json"
    assert server.headers[0]["idempotency-key"] == "alert-0000:raised"
    assert server.headers[1]["idempotency-key"] == "alert-0000:resolved"


def test_followup_payload_keeps_null_category() -> None:
    alert = sla_alert(kind="enrollment.dormant", category=None, staff_pool="front_desk")
    body = alert_payload(alert)
    assert body["category"] is None and body["staff_pool"] == "front_desk"


def test_503_twice_then_success_is_delivered_after_retries(server: Recorder) -> None:
    server.script = [(503, {}, 0.0), (503, {}, 0.0)]
    n = notifier(server.url)
    asyncio.run(deliver(n, sla_alert()))
    assert len(server.raw) == 3
    assert n.stats.delivered == 1
    assert n.stats.failed_attempts == 2
    assert n.stats.gave_up == 0


def test_always_500_gives_up_after_max_attempts_and_submit_never_blocks(
    server: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = 500
    caplog.set_level(logging.INFO, logger="portal_pulse.notify")

    async def scenario() -> tuple[WebhookNotifier, float]:
        n = notifier(server.url, max_attempts=3, queue_size=50)
        await n.start()
        slowest = 0.0
        for i in range(3):
            started = time.perf_counter()
            n.submit(sla_alert(i))
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.02)  # the worker is mid-retry while the stream goes on
        await n.stop(drain_timeout=10)
        return n, slowest

    n, slowest = asyncio.run(scenario())
    assert slowest < 0.05
    assert len(server.raw) == 9
    assert n.stats.failed_attempts == 9
    assert n.stats.gave_up == 3
    assert n.stats.delivered == 0
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 3 and all(r.levelno == logging.WARNING for r in gave_up)


def test_400_is_not_retried_and_the_next_alert_still_goes(
    server: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [(400, {}, 0.0)]
    caplog.set_level(logging.DEBUG, logger="portal_pulse.notify")
    n = notifier(server.url)
    asyncio.run(deliver(n, sla_alert(1), sla_alert(2)))
    assert [b["alert_id"] for b in server.bodies] == ["alert-0001", "alert-0002"]
    assert n.stats.gave_up == 1
    assert n.stats.failed_attempts == 1
    assert n.stats.delivered == 1
    rejected = [r for r in caplog.records if "HTTP 400" in r.getMessage()]
    assert len(rejected) == 1 and rejected[0].levelno == logging.WARNING
    assert PSEUDONYM not in caplog.text and "thread-1" not in caplog.text


def test_429_retry_after_is_respected(server: Recorder) -> None:
    server.script = [(429, {"Retry-After": "1"}, 0.0)]
    n = notifier(server.url, backoff_max=30)
    started = time.monotonic()
    asyncio.run(deliver(n, sla_alert()))
    assert time.monotonic() - started >= 0.9
    assert n.stats.delivered == 1 and n.stats.failed_attempts == 1


def test_retry_after_is_capped_by_backoff_max(server: Recorder) -> None:
    server.script = [(503, {"Retry-After": "3600"}, 0.0)]
    n = notifier(server.url, backoff_max=0.05)
    started = time.monotonic()
    asyncio.run(deliver(n, sla_alert()))
    assert time.monotonic() - started < 5
    assert n.stats.delivered == 1


def test_timeout_is_retried(server: Recorder) -> None:
    server.script = [(200, {}, 1.0)]
    n = notifier(server.url, timeout=0.2)
    asyncio.run(deliver(n, sla_alert()))
    assert n.stats.failed_attempts == 1
    assert n.stats.delivered == 1


def test_queue_overflow_drops_the_oldest_and_counts_it(server: Recorder) -> None:
    n = notifier(server.url, queue_size=2)

    async def scenario() -> None:
        for i in range(5):  # before start: nothing drains the queue
            n.submit(sla_alert(i))
        await n.start()
        await n.stop(drain_timeout=10)

    asyncio.run(scenario())
    assert n.stats.dropped == 3
    assert n.stats.delivered == 2
    assert [b["alert_id"] for b in server.bodies] == ["alert-0003", "alert-0004"]


def test_connection_refused_is_retried_then_given_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = notifier(f"http://127.0.0.1:{port}/hook", max_attempts=3)
    asyncio.run(deliver(n, sla_alert()))
    assert n.stats.failed_attempts == 3
    assert n.stats.gave_up == 1
    assert n.stats.delivered == 0


def test_stop_bounds_the_drain_and_counts_the_rest_as_dropped(server: Recorder) -> None:
    server.default = 503
    n = notifier(server.url, max_attempts=100, backoff_base=5, backoff_max=5)
    started = time.monotonic()
    asyncio.run(deliver(n, sla_alert(1), sla_alert(2), drain=0.3))
    assert time.monotonic() - started < 3
    assert n.stats.dropped == 2  # one interrupted mid-retry, one never taken
    assert n.stats.delivered == 0
    assert n.pending == 0


def test_submit_after_stop_is_dropped_not_raised(server: Recorder) -> None:
    n = notifier(server.url)
    asyncio.run(deliver(n))
    n.submit(sla_alert())
    assert n.stats.dropped == 1
    assert server.raw == []


def test_no_raw_patient_id_reaches_the_receiver_or_the_logs(
    server: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [(503, {}, 0.0), (400, {}, 0.0)]
    followup = sla_alert(
        7, kind="enrollment.no_first_login", subject_id=PSEUDONYM, category=None,
        staff_pool="front_desk",
    )  # fmt: skip
    alerts = [sla_alert(1), sla_alert(1).resolve(T0 + timedelta(hours=1), 60.0), followup]
    n = notifier(server.url)
    asyncio.run(deliver(n, *alerts))
    assert len(server.raw) == 4
    for raw in server.raw:
        assert RAW_MRN.encode() not in raw
        assert json.loads(raw)["patient_pseudonym"] == PSEUDONYM
    assert RAW_MRN not in caplog.text
    assert PSEUDONYM not in caplog.text


def test_an_alert_carrying_a_raw_patient_id_is_refused(
    server: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    n = notifier(server.url)
    asyncio.run(deliver(n, sla_alert(patient_pseudonym=RAW_MRN), sla_alert(2)))
    assert n.stats.rejected == 1
    assert [b["alert_id"] for b in server.bodies] == ["alert-0002"]
    assert all(RAW_MRN.encode() not in raw for raw in server.raw)
    assert RAW_MRN not in caplog.text
