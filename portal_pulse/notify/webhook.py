"""Alert webhook: every raised, resolved and withdrawn alert POSTed as JSON, off the stream's path.

The stream must never wait on a pager, so ``submit`` only puts the alert on a bounded queue and a
small pool of senders delivers it. A receiver cannot stall the pool for long, nor the worker's
memory: each attempt has one overall deadline (connect, upload, status and body together; httpx's
own timeouts apply per read, so a server trickling a byte a second would never trip them), and at
most ``max_response_bytes`` of a response body are read before the connection is dropped. One
slow receiver call holds one sender; the others go on with the next alerts.

Order matters only within an alert: its ``resolved`` or ``withdrawn`` must not overtake its
``raised``, nor a ``raised`` issued again after a withdrawal overtake the withdrawal. A sender
therefore takes the oldest queued version whose alert has no version in flight, so the versions of
one alert go out one after the other, in the order submitted, while different alerts overtake each
other freely. When the queue is full the *oldest* entry is dropped: the newest alerts are the most
actionable, and a lost raise is harmless once its resolution (which repeats every field) arrives,
whereas a lost resolution would leave the receiver paging for a problem already over. ClickHouse's
``alerts`` table stays the complete record either way.

The body carries exactly the SPEC §8 fields plus ``event`` (``raised``, ``resolved`` or
``withdrawn``: SPEC §7.1, later data showed the alert should not have fired). Each POST has an
``Idempotency-Key`` that names the version (``idempotency_key``). Patients appear only as pseudonyms
(SPEC §9); as a second line of defence an alert whose ``patient_pseudonym`` is not a 32-hex-digit
pseudonym is refused before it is queued. Logs name alerts by ``alert_id`` and kind only, never
the payload, and never the URL beyond its scheme and host (webhook URLs often embed a token).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.reports.alerts import ALERT_FIELDS, iso_z
from portal_pulse.settings import Settings, mask_url

if TYPE_CHECKING:
    from portal_pulse.metrics import PipelineMetrics

__all__ = [
    "Cutoff",
    "WebhookNotifier",
    "WebhookStats",
    "alert_event",
    "alert_payload",
    "check_webhook_url",
    "idempotency_key",
    "notifier_from_settings",
]

logger = logging.getLogger(__name__)

# Why an attempt was cut short: its overall deadline passed, or its response body passed the bound.
Cutoff = Literal["deadline", "body_limit"]


class _HideUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; a webhook URL's path and query hold its
    token, so those records are dropped (this module logs deliveries itself, without URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request:")


logging.getLogger("httpx").addFilter(_HideUrls())

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_INSTANTS = ("due_at", "resolved_at", "withdrawn_at")


def alert_event(alert: Alert) -> str:
    """What this version tells a pager: ``withdrawn`` wins over ``resolved`` over ``raised``."""
    if alert.withdrawn_at is not None:
        return "withdrawn"
    return "raised" if alert.resolved_at is None else "resolved"


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body: SPEC §8 fields (instants ISO-8601 UTC with ``Z``) and the event."""
    body: dict[str, Any] = {name: getattr(alert, name) for name in ALERT_FIELDS}
    for name in _INSTANTS:
        body[name] = iso_z(body[name])
    body["event"] = alert_event(alert)
    return body


def idempotency_key(alert: Alert) -> str:
    """The ``Idempotency-Key`` of this version: the same for every copy of one version (a retry,
    a record processed again after a restart), different for different versions.

    ``<alert_id>:raised`` and ``<alert_id>:resolved`` for an alert's first raise and resolution,
    whose ``updated_at`` is the instant the rules give (``raised_at``; the later of it and
    ``resolved_at``). A version a correction issues (raised late, raised again after a
    withdrawal, say with another staff pool, or resolved after that) has a later
    ``updated_at``, and every withdrawal may be one of several: those keys end with
    ``:<updated_at in epoch ms>``, so a receiver that de-duplicates on the key never drops them
    (docs/operations.md, "Events and keys").
    """
    event = alert_event(alert)
    first = {
        "raised": alert.raised_at,
        "resolved": max(alert.resolved_at or alert.raised_at, alert.raised_at),
    }.get(event)
    if first is not None and alert.updated_at == first:
        return f"{alert.alert_id}:{event}"
    return f"{alert.alert_id}:{event}:{_epoch_ms(alert.updated_at)}"


def _epoch_ms(at: datetime) -> int:
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str, *, require_tls: bool) -> str | None:
    """Refuse a URL that cannot work or, with ``require_tls``, plain ``http://`` beyond loopback.

    Returns a warning for plain ``http://`` beyond loopback when TLS is not required, else None.
    Messages name the URL by scheme and host only: its path and query often hold a token.
    """
    shown = mask_url(url, keep_path=False)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UserError(f"PORTAL_PULSE_WEBHOOK_URL is not a valid URL ({shown})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise UserError(
            f"PORTAL_PULSE_WEBHOOK_URL must be an https:// (or http://) URL with a host, "
            f"got {shown}"
        )
    if scheme == "https" or _is_loopback(host):
        return None
    if require_tls:
        raise UserError(
            f"PORTAL_PULSE_WEBHOOK_URL {shown} is plain http:// and "
            "PORTAL_PULSE_WEBHOOK_REQUIRE_TLS is on: use https:// (alerts carry PHI)"
        )
    return (
        f"webhook URL {shown} is plain http://: alerts (PHI) and the URL's token cross the "
        "network unencrypted; use https:// (PORTAL_PULSE_WEBHOOK_REQUIRE_TLS=true refuses this)"
    )


@dataclass
class WebhookStats:
    """Counters for operators; ``failed_attempts`` counts every failed POST, retried or not.

    ``deadline_cutoffs`` and ``body_cutoffs`` count attempts cut short (see ``Cutoff``);
    ``response_bytes`` is every response body byte read, which the body bound keeps small.
    """

    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    rejected: int = 0
    deadline_cutoffs: int = 0
    body_cutoffs: int = 0
    response_bytes: int = 0


@dataclass(frozen=True, slots=True)
class _Item:
    alert_id: str
    kind: str
    body: dict[str, Any]
    key: str


class _Retry(Exception):
    """A retryable failure; ``wait`` is the server's Retry-After in seconds, if it gave one."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class WebhookNotifier:
    """Delivers alerts to ``url`` from ``concurrency`` background senders; call ``submit`` from
    the loop's thread.

    Each attempt must finish within ``timeout`` seconds, response body included, and reads at
    most ``max_response_bytes`` of that body. Retries connection errors, timeouts, 429 and 5xx
    with exponential back-off and jitter (a Retry-After header wins, capped at ``backoff_max``),
    up to ``max_attempts`` POSTs per alert; any other non-2xx status is final at once, since
    resending the same body cannot fix it. The status decides: a 2xx whose body is cut short is
    delivered. A sender waits out its alert's back-off, so the other senders carry on meanwhile.
    ``on_cutoff`` is told the reason of every attempt cut short (the worker counts it as a metric).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_attempts: int,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        queue_size: int = 10_000,
        concurrency: int = 4,
        max_response_bytes: int = 65_536,
        on_cutoff: Callable[[Cutoff], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_response_bytes < 0:
            raise ValueError("max_response_bytes must not be negative")
        self._url = url
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._max_response_bytes = max_response_bytes
        self._on_cutoff = on_cutoff
        # Queued versions, oldest first, by submission number; ``_busy`` holds the alerts that
        # have a version with a sender (in flight or waiting out a back-off).
        self._waiting: OrderedDict[int, _Item] = OrderedDict()
        self._numbers = itertools.count()
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._closed = False
        self.stats = WebhookStats()

    @property
    def pending(self) -> int:
        """Alerts queued and not yet taken by a sender."""
        return len(self._waiting)

    def submit(self, alert: Alert) -> None:
        """Queue one alert version; never blocks and never raises (the stream must not stall)."""
        try:
            if self._closed:
                self.stats.dropped += 1
                return
            if not _PSEUDONYM.match(alert.patient_pseudonym or ""):
                self.stats.rejected += 1
                logger.error(
                    "webhook refused alert %s (%s): patient_pseudonym is not a pseudonym",
                    alert.alert_id, alert.kind,
                )  # fmt: skip
                return
            item = _Item(alert.alert_id, alert.kind, alert_payload(alert), idempotency_key(alert))
            if len(self._waiting) >= self._queue_size:
                _, old = self._waiting.popitem(last=False)
                self.stats.dropped += 1
                logger.warning("webhook queue full: dropped alert %s (%s)", old.alert_id, old.kind)
            self._waiting[next(self._numbers)] = item
            self._idle.clear()
            self._wake.set()
        except Exception as exc:
            self.stats.dropped += 1
            logger.error("webhook could not queue an alert: %s", type(exc).__name__)

    async def start(self) -> None:
        """Open the HTTP client and start the senders (alerts submitted earlier are kept)."""
        if self._senders:
            return
        self._closed = False
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,  # a redirect could point the alert (PHI) anywhere
            headers={
                "User-Agent": "portal-pulse-webhook",
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",  # the bound counts bytes on the wire
            },
            limits=httpx.Limits(max_connections=self._concurrency),
        )
        self._senders = [
            asyncio.create_task(self._send_loop(), name=f"portal-pulse-webhook-{i}")
            for i in range(self._concurrency)
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting alerts, deliver what is queued for up to ``drain_timeout`` s, then quit.

        Whatever is still undelivered after that is counted as dropped.
        """
        self._closed = True
        if self._senders:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout)
            for task in self._senders:
                task.cancel()
            await asyncio.gather(*self._senders, return_exceptions=True)
            self._senders = []
        left = len(self._waiting)
        self._waiting.clear()
        self._busy.clear()
        self._idle.set()
        if left:
            self.stats.dropped += left
            logger.warning("webhook stopped with %d alerts undelivered", left)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _take(self) -> _Item | None:
        """The oldest queued version whose alert has nothing with a sender, marked busy."""
        for number, item in self._waiting.items():
            if item.alert_id not in self._busy:
                del self._waiting[number]  # iteration ends here
                self._busy.add(item.alert_id)
                return item
        return None

    async def _send_loop(self) -> None:
        while True:
            item = self._take()
            if item is None:
                self._wake.clear()  # nothing takeable now; submit() and finished sends set it
                await self._wake.wait()
                continue
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                self.stats.dropped += 1  # interrupted by stop()
                raise
            except Exception as exc:  # the worker must outlive any single delivery
                self.stats.gave_up += 1
                logger.error(
                    "webhook delivery of alert %s (%s) failed: %s",
                    item.alert_id, item.kind, type(exc).__name__,
                )  # fmt: skip
            finally:
                self._busy.discard(item.alert_id)
                self._wake.set()  # the alert's next version, if queued, may go now
                if not self._waiting and not self._busy:
                    self._idle.set()

    async def _deliver(self, item: _Item) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._post(item)
            except _Retry as retry:
                self.stats.failed_attempts += 1
                if attempt == self._max_attempts:
                    self.stats.gave_up += 1
                    logger.warning(
                        "webhook gave up on alert %s (%s) after %d attempts: %s",
                        item.alert_id, item.kind, attempt, retry.reason,
                    )  # fmt: skip
                    return
                delay = self._delay(attempt, retry.wait)
                logger.info(
                    "webhook attempt %d for alert %s failed (%s); retrying in %.2fs",
                    attempt, item.alert_id, retry.reason, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            else:
                return

    async def _post(self, item: _Item) -> None:
        """One POST within the deadline: returns on 2xx, raises ``_Retry`` when worth retrying,
        else gives up. The status decides; a body cut short changes nothing but the counts."""
        assert self._client is not None
        status: int | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream(
                    "POST",
                    self._url,
                    json=item.body,
                    headers={"Idempotency-Key": item.key},
                ) as response:
                    status = response.status_code
                    retry_after = response.headers.get("Retry-After")
                    await self._read_bounded(response, item)
        except TimeoutError:
            self._cutoff("deadline", item)
            if status is None:
                raise _Retry("deadline") from None
        except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
            if status is None:
                raise _Retry(type(exc).__name__) from None
            # The body broke off after the status line: the status stands.
        assert status is not None
        if 200 <= status < 300:
            self.stats.delivered += 1
            return
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}", _retry_after(retry_after, datetime.now(UTC)))
        self.stats.failed_attempts += 1
        self.stats.gave_up += 1
        logger.warning(
            "webhook rejected alert %s (%s) with HTTP %d: not retried",
            item.alert_id, item.kind, status,
        )  # fmt: skip

    async def _read_bounded(self, response: httpx.Response, item: _Item) -> None:
        """Read and discard the body up to the bound (so a small one leaves the connection
        reusable); past it, stop: leaving the stream closes the connection unread."""
        read = 0
        try:
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > self._max_response_bytes:
                    self._cutoff("body_limit", item)
                    return
        finally:
            self.stats.response_bytes += read

    def _cutoff(self, reason: Cutoff, item: _Item) -> None:
        if reason == "deadline":
            self.stats.deadline_cutoffs += 1
            logger.warning(
                "webhook attempt for alert %s (%s) passed its %.3gs deadline: connection closed",
                item.alert_id, item.kind, self._timeout,
            )  # fmt: skip
        else:
            self.stats.body_cutoffs += 1
            logger.warning(
                "webhook response for alert %s (%s) is over %d bytes: "
                "stopped reading, connection closed",
                item.alert_id, item.kind, self._max_response_bytes,
            )  # fmt: skip
        if self._on_cutoff is not None:
            try:
                self._on_cutoff(reason)
            except Exception as exc:  # counting must never break a delivery
                logger.error("webhook cutoff counter failed: %s", type(exc).__name__)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Back-off before the next attempt: Retry-After if given, else exponential with jitter."""
        if retry_after is not None:
            return min(retry_after, self._backoff_max)
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 -- back-off jitter, not a secret


def notifier_from_settings(
    settings: Settings, metrics: PipelineMetrics | None = None
) -> WebhookNotifier | None:
    """The configured notifier, or None when no ``webhook_url`` is set.

    Raises ``UserError`` for a URL that cannot work, or plain ``http://`` beyond loopback when
    ``webhook_require_tls`` is on; otherwise logs a warning for such a URL. With ``metrics``,
    attempts cut short are counted in ``portal_pulse_webhook_cutoffs_total``.
    """
    if not settings.webhook_url:
        return None
    warning = check_webhook_url(settings.webhook_url, require_tls=settings.webhook_require_tls)
    if warning:
        logger.warning("%s", warning)
    on_cutoff = None
    if metrics is not None:
        counter = metrics.webhook_cutoffs
        on_cutoff = lambda reason: counter.labels(reason).inc()  # noqa: E731
    return WebhookNotifier(
        settings.webhook_url,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        concurrency=settings.webhook_concurrency,
        max_response_bytes=settings.webhook_max_response_bytes,
        on_cutoff=on_cutoff,
    )
