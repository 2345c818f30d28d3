"""WebhookNotifier against real HTTP servers on loopback: delivery, retries, give-up, PHI, and
what a hostile or broken receiver can do (huge bodies, trickled replies, plain http://)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.metrics import PipelineMetrics
from portal_pulse.notify.webhook import (
    WebhookNotifier,
    alert_payload,
    check_webhook_url,
    idempotency_key,
    notifier_from_settings,
)
from portal_pulse.pseudonym import Pseudonymizer
from portal_pulse.reports.alerts import ALERT_FIELDS
from portal_pulse.settings import Settings

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RAW_MRN = "MRN-00012345"
PSEUDONYM = Pseudonymizer(b"unit-test-key-not-a-secret-32-bytes")("practice-w", RAW_MRN)


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
        "withdrawn_at": None,
        "event": "raised",
    }
    assert second["event"] == "resolved"
    assert second["resolved_at"] == "2026-01-05T11:00:00.005Z"
    assert second["response_business_minutes"] == 125.5
    assert server.headers[0]["content-type"] == "application/json"
    assert server.headers[0]["idempotency-key"] == "alert-0000:raised"
    assert server.headers[1]["idempotency-key"] == "alert-0000:resolved"


def test_a_withdrawn_alert_is_posted_as_withdrawn_after_its_raise(server: Recorder) -> None:
    raised = sla_alert()
    withdrawn = raised.withdraw(T0 + timedelta(minutes=3, milliseconds=250))
    n = notifier(server.url)
    asyncio.run(deliver(n, raised, withdrawn))

    assert n.stats.delivered == 2
    first, second = server.bodies
    assert set(second) == {*ALERT_FIELDS, "event"}
    assert (first["event"], first["withdrawn_at"]) == ("raised", None)
    assert second == {**first, "event": "withdrawn", "withdrawn_at": "2026-01-05T09:03:00.250Z"}
    ms = int((T0 + timedelta(minutes=3, milliseconds=250)).timestamp()) * 1000 + 250
    assert [h["idempotency-key"] for h in server.headers] == [
        "alert-0000:raised",
        f"alert-0000:withdrawn:{ms}",
    ]


def test_a_resolved_alert_withdrawn_is_a_withdrawal_not_a_resolution() -> None:
    resolved = sla_alert().resolve(T0 + timedelta(hours=1), 60.0)
    body = alert_payload(resolved.withdraw(T0 + timedelta(days=1)))
    assert body["event"] == "withdrawn"
    assert body["resolved_at"] == "2026-01-05T10:00:00.000Z"
    assert body["withdrawn_at"] == "2026-01-06T09:00:00.000Z"


def test_every_version_of_an_alert_corrected_twice_has_its_own_key() -> None:
    """raise → withdrawn → raised again with another pool → resolved → withdrawn again: a
    receiver that de-duplicates on the key sees five versions; a copy of one version (a retry,
    a record processed again) keeps its key."""
    raised = sla_alert()
    first_withdrawal = raised.withdraw(T0 + timedelta(minutes=5))
    again = dataclasses.replace(
        raised, category="billing", staff_pool="billing", updated_at=T0 + timedelta(minutes=6)
    )
    resolved = again.resolve(T0 + timedelta(minutes=30), 30.0)
    second_withdrawal = resolved.withdraw(T0 + timedelta(hours=2))
    versions = [raised, first_withdrawal, again, resolved, second_withdrawal]
    keys = [idempotency_key(v) for v in versions]
    assert [alert_payload(v)["event"] for v in versions] == [
        "raised", "withdrawn", "raised", "resolved", "withdrawn",
    ]  # fmt: skip
    assert keys[0] == "alert-0000:raised"
    assert all(k.startswith("alert-0000:") for k in keys)
    assert len(set(keys)) == len(keys)
    assert [idempotency_key(dataclasses.replace(v)) for v in versions] == keys
    # An alert never withdrawn keeps the plain scheme, whenever its resolution comes.
    late = raised.resolve(raised.raised_at - timedelta(minutes=1))
    assert idempotency_key(late) == "alert-0000:resolved"


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
    # Different alerts go out side by side, in either order.
    assert sorted(b["alert_id"] for b in server.bodies) == ["alert-0001", "alert-0002"]
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
    assert sorted(b["alert_id"] for b in server.bodies) == ["alert-0003", "alert-0004"]


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


# --- hostile or broken receivers ------------------------------------------------------------------

HUGE = 400 * 2**20  # what the receiver offers; generated block by block, never held
BLOCK = 64 * 1024
# One socket read of httpcore's: the most the client can hold beyond the body bound.
SOCKET_READ = 64 * 1024

Behaviour = Callable[["Hooks", str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class Hooks:
    """An HTTP/1.1 receiver on loopback (asyncio streams, in the test's own loop).

    ``behave(alert_id, event, attempt)`` picks how each request is answered; ``log`` records what
    happened in order as (what, "alert_id:event"), so tests assert on order, not on durations.
    """

    def __init__(self, behave: Callable[[str, str, int], Behaviour]) -> None:
        self.behave = behave
        self.log: list[tuple[str, str]] = []
        self.attempts: Counter[str] = Counter()
        self.body_bytes_sent = 0
        self.settled = asyncio.Event()  # a connection the server meant to end has ended
        self.url = ""

    async def __aenter__(self) -> Hooks:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook?token=hook-secret-token"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def index(self, what: str, key: str) -> int:
        return self.log.index((what, key))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    assert match is not None
                    body = json.loads(await reader.readexactly(int(match.group(1))))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                key = f"{body['alert_id']}:{body['event']}"
                self.attempts[key] += 1
                self.log.append(("request", key))
                behaviour = self.behave(body["alert_id"], body["event"], self.attempts[key])
                if not await behaviour(self, key, reader, writer):
                    return
        finally:
            writer.close()


async def answer_ok(
    hooks: Hooks, key: str, _r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> bool:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await w.drain()
    hooks.log.append(("answered", key))
    return True


def answer_huge(*, chunked: bool) -> Behaviour:
    """200 with a 400 MB body, written block by block for as long as the client reads."""

    async def behaviour(
        hooks: Hooks, key: str, _r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % HUGE
        w.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
        block = b"x" * BLOCK
        if chunked:
            block = b"%x\r\n" % BLOCK + block + b"\r\n"
        sent = 0
        try:
            while sent < HUGE:
                w.write(block)
                await w.drain()
                sent += BLOCK
            if chunked:
                w.write(b"0\r\n\r\n")
                await w.drain()
            hooks.log.append(("body sent in full", key))
        except ConnectionError:
            hooks.log.append(("client hung up", key))
        hooks.body_bytes_sent += sent
        hooks.settled.set()
        return False

    return behaviour


async def _trickle(
    hooks: Hooks, key: str, data: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """``data`` one byte a second (the pace, not a guard), until sent or the client hangs up."""
    try:
        for byte in data:
            w.write(bytes([byte]))
            await w.drain()
            try:
                if await asyncio.wait_for(r.read(1), 1.0) == b"":
                    hooks.log.append(("client hung up", key))
                    break
            except TimeoutError:
                continue
        else:
            hooks.log.append(("trickle finished", key))
    except ConnectionError:
        hooks.log.append(("client hung up", key))
    hooks.settled.set()


async def trickle_head(
    hooks: Hooks, key: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> bool:
    """The status line and headers, one byte a second: no per-read timeout ever trips."""
    await _trickle(hooks, key, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", r, w)
    return False


async def trickle_body(
    hooks: Hooks, key: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> bool:
    """A prompt 200, then its 40-byte body one byte a second."""
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
    await w.drain()
    await _trickle(hooks, key, b"y" * 40, r, w)
    return False


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_response_body_is_read_only_up_to_the_bound(
    chunked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = PipelineMetrics()

    async def scenario() -> tuple[WebhookNotifier, Hooks]:
        async with Hooks(lambda *_: answer_huge(chunked=chunked)) as hooks:
            settings = Settings(webhook_url=hooks.url, webhook_timeout_seconds=60)
            n = notifier_from_settings(settings, metrics)
            assert n is not None
            await deliver(n, sla_alert(), drain=120)
            await asyncio.wait_for(hooks.settled.wait(), 60)  # liveness bound only
            return n, hooks

    n, hooks = asyncio.run(scenario())
    key = "alert-0000:raised"
    # The receiver answered 200: delivered, once, and the body cut at the bound.
    assert hooks.log == [("request", key), ("client hung up", key)]
    assert n.stats.delivered == 1
    assert n.stats.failed_attempts == n.stats.gave_up == n.stats.deadline_cutoffs == 0
    assert n.stats.body_cutoffs == 1
    # What the client read of the 400 MB: the bound (64 KiB) and at most one socket read more.
    assert 65_536 < n.stats.response_bytes <= 65_536 + SOCKET_READ
    # The server got rid of no more than the socket buffers hold before the client hung up.
    assert hooks.body_bytes_sent < HUGE // 8
    sample = metrics.registry.get_sample_value
    assert sample("portal_pulse_webhook_cutoffs_total", {"reason": "body_limit"}) == 1
    assert sample("portal_pulse_webhook_cutoffs_total", {"reason": "deadline"}) == 0
    lines = [r.getMessage() for r in caplog.records if "over 65536 bytes" in r.getMessage()]
    assert lines == ["webhook response for alert alert-0000 (sla.breached) is over 65536 bytes: "
                     "stopped reading, connection closed"]  # fmt: skip
    assert PSEUDONYM not in caplog.text and "hook-secret-token" not in caplog.text


def test_a_trickling_receiver_is_cut_at_the_deadline_and_holds_back_no_other_alert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    slow, fast = "alert-0001:raised", "alert-0002:raised"
    cutoffs: list[str] = []

    def behave(alert_id: str, event: str, attempt: int) -> Behaviour:
        return trickle_head if alert_id == "alert-0001" and attempt == 1 else answer_ok

    async def scenario() -> tuple[WebhookNotifier, Hooks]:
        async with Hooks(behave) as hooks:
            # httpx's per-read timeout is the same 3 s: a byte a second never trips it.
            n = notifier(hooks.url, timeout=3.0, on_cutoff=cutoffs.append)
            await n.start()
            n.submit(sla_alert(1))
            n.submit(sla_alert(2))
            await n.stop(drain_timeout=60)  # a liveness bound only
            await asyncio.wait_for(hooks.settled.wait(), 60)  # the trickle has ended
            return n, hooks

    n, hooks = asyncio.run(scenario())
    first, retry = [i for i, entry in enumerate(hooks.log) if entry == ("request", slow)]
    # The second alert went out while the first one's receiver was still trickling...
    assert first < hooks.index("answered", fast) < retry
    # ...which the client abandoned at the deadline (hung up: the reply was never finished),
    # then retried and delivered.
    assert hooks.attempts == {slow: 2, fast: 1}
    assert ("client hung up", slow) in hooks.log and ("trickle finished", slow) not in hooks.log
    assert ("answered", slow) in hooks.log[retry:]
    assert n.stats.delivered == 2
    assert n.stats.failed_attempts == 1 and n.stats.gave_up == 0
    assert n.stats.deadline_cutoffs == 1 and n.stats.body_cutoffs == 0
    assert cutoffs == ["deadline"]
    cut = [r for r in caplog.records if "deadline" in r.getMessage()]
    assert cut[0].levelno == logging.WARNING
    assert cut[0].getMessage() == (
        "webhook attempt for alert alert-0001 (sla.breached) passed its 3s deadline: "
        "connection closed"
    )
    assert PSEUDONYM not in caplog.text and "hook-secret-token" not in caplog.text


def test_a_2xx_whose_body_trickles_is_delivered_once_and_cut_at_the_deadline() -> None:
    async def scenario() -> tuple[WebhookNotifier, Hooks]:
        async with Hooks(lambda *_: trickle_body) as hooks:
            n = notifier(hooks.url, timeout=2.0)
            await deliver(n, sla_alert(), drain=60)
            await asyncio.wait_for(hooks.settled.wait(), 60)
            return n, hooks

    n, hooks = asyncio.run(scenario())
    key = "alert-0000:raised"
    # The status decides: the receiver has the alert, so it is not sent again.
    assert hooks.log == [("request", key), ("client hung up", key)]
    assert n.stats.delivered == 1 and n.stats.failed_attempts == 0
    assert n.stats.deadline_cutoffs == 1


def test_a_resolution_waits_for_its_raise_while_other_alerts_overtake() -> None:
    a_raised, a_resolved, b_raised = "alert-0001:raised", "alert-0001:resolved", "alert-0002:raised"

    async def scenario() -> tuple[WebhookNotifier, Hooks]:
        b_seen = asyncio.Event()

        async def held_until_b(
            hooks: Hooks, key: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            await asyncio.wait_for(b_seen.wait(), 30)  # liveness bound only
            return await answer_ok(hooks, key, r, w)

        async def b_answer(
            hooks: Hooks, key: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            b_seen.set()
            return await answer_ok(hooks, key, r, w)

        def behave(alert_id: str, event: str, attempt: int) -> Behaviour:
            if alert_id == "alert-0002":
                return b_answer
            return held_until_b if event == "raised" else answer_ok

        async with Hooks(behave) as hooks:
            n = notifier(hooks.url)
            raised = sla_alert(1)
            await n.start()
            n.submit(raised)
            n.submit(raised.resolve(T0 + timedelta(hours=1), 60.0))
            n.submit(sla_alert(2))
            await n.stop(drain_timeout=60)
            return n, hooks

    n, hooks = asyncio.run(scenario())
    assert n.stats.delivered == 3 and n.stats.failed_attempts == 0
    # B went out while A's raise was held; A's resolution only after A's raise was answered.
    assert hooks.index("request", b_raised) < hooks.index("answered", a_raised)
    assert hooks.index("answered", a_raised) < hooks.index("request", a_resolved)


def test_a_withdrawal_waits_for_its_raise_even_through_retries() -> None:
    """The raise fails twice (503) and is retried; the withdrawal, submitted right after it,
    goes out only once the raise has been answered, and the raise issued again after it only
    once the withdrawal has."""
    raised_key, withdrawn_key = "alert-0001:raised", "alert-0001:withdrawn"

    async def unavailable(
        hooks: Hooks, key: str, _r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        w.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        hooks.log.append(("refused", key))
        return True

    def behave(alert_id: str, event: str, attempt: int) -> Behaviour:
        return unavailable if event == "raised" and attempt <= 2 else answer_ok

    async def scenario() -> tuple[WebhookNotifier, Hooks]:
        async with Hooks(behave) as hooks:
            n = notifier(hooks.url)
            raised = sla_alert(1)
            await n.start()
            n.submit(raised)
            n.submit(raised.withdraw(T0 + timedelta(minutes=9)))
            n.submit(dataclasses.replace(raised, updated_at=T0 + timedelta(minutes=10)))
            await n.stop(drain_timeout=60)
            return n, hooks

    n, hooks = asyncio.run(scenario())
    assert n.stats.delivered == 3 and n.stats.failed_attempts == 2
    requests = [key for what, key in hooks.log if what == "request"]
    assert requests == [raised_key] * 3 + [withdrawn_key, raised_key]
    assert hooks.index("answered", raised_key) < hooks.index("request", withdrawn_key)


# --- plain http:// --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://pager.example.org/hook?token=s3cret",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://localhost/hook",
    ],
)
@pytest.mark.parametrize("require_tls", [False, True])
def test_https_and_loopback_http_pass_silently(url: str, require_tls: bool) -> None:
    assert check_webhook_url(url, require_tls=require_tls) is None


def test_plain_http_beyond_loopback_warns_at_start_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    url = "http://pager.example.org:8080/hooks/s3cret-path?token=s3cret-query"
    n = notifier_from_settings(Settings(webhook_url=url))
    assert isinstance(n, WebhookNotifier)
    warnings = [r for r in caplog.records if r.name == "portal_pulse.notify.webhook"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "plain http://" in message and "http://pager.example.org:8080" in message
    assert "s3cret" not in caplog.text


def test_plain_http_beyond_loopback_is_refused_when_tls_is_required() -> None:
    url = "http://10.1.2.3/hooks/s3cret-path?token=s3cret-query"
    with pytest.raises(UserError) as refused:
        notifier_from_settings(Settings(webhook_url=url, webhook_require_tls=True))
    message = str(refused.value)
    assert refused.value.exit_code == 2
    assert len(message.splitlines()) <= 2
    assert "PORTAL_PULSE_WEBHOOK_REQUIRE_TLS" in message and "http://10.1.2.3" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    ["ftp://pager.example.org/hook", "pager.example.org/hook", "https:///nohost", "http://h:x/"],
)
def test_a_webhook_url_that_cannot_work_is_refused(url: str) -> None:
    with pytest.raises(UserError) as refused:
        check_webhook_url(url, require_tls=False)
    assert refused.value.exit_code == 2 and "PORTAL_PULSE_WEBHOOK_URL" in str(refused.value)


def test_webhook_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    defaults = Settings()
    assert defaults.webhook_require_tls is False
    assert defaults.webhook_max_response_bytes == 65_536
    assert defaults.webhook_concurrency == 4
    monkeypatch.setenv("PORTAL_PULSE_WEBHOOK_REQUIRE_TLS", "true")
    monkeypatch.setenv("PORTAL_PULSE_WEBHOOK_CONCURRENCY", "2")
    from_env = Settings()
    assert from_env.webhook_require_tls is True and from_env.webhook_concurrency == 2
    for bad in (
        {"webhook_concurrency": 0},
        {"webhook_timeout_seconds": 0},
        {"webhook_max_attempts": 0},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)
