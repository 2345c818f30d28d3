"""The delivery machinery every alert sink shares (webhook, Alertmanager, PagerDuty).

The stream must never wait on a pager, so ``enqueue`` only puts a request on a bounded queue and a
small pool of senders delivers it. A receiver cannot stall the pool for long, nor the worker's
memory: each attempt has one overall deadline (connect, upload, status and body together; httpx's
own timeouts apply per read, so a server trickling a byte a second would never trip them), and at
most ``max_response_bytes`` of a response body are read before the connection is dropped. One
slow receiver call holds one sender; the others go on with the next requests.

Order matters only within an alert: its ``resolved`` or ``withdrawn`` must not overtake its
``raised``, nor a ``raised`` issued again after a withdrawal overtake the withdrawal. Every request
names the alerts it carries (its *keys*: one, or many for a batch such as an Alertmanager resend).
A sender takes the oldest queued request none of whose alerts is with a sender or in an older
queued request, so the requests of one alert go out one after the other, in the order enqueued,
while different alerts overtake each other freely. When the queue is full the *oldest* request is
dropped: the newest alerts are the most actionable, and a lost raise is harmless once its
resolution (which repeats every field) arrives, whereas a lost resolution would leave the receiver
paging for a problem already over.

Logs name requests by ``alert_id`` and kind only, never the body, and never the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from portal_pulse.errors import UserError
from portal_pulse.settings import mask_url

__all__ = ["OUTCOMES", "AlertSender", "Cutoff", "DeliveryStats", "check_url"]

logger = logging.getLogger(__name__)

# Why an attempt was cut short: its overall deadline passed, or its response body passed the bound.
Cutoff = Literal["deadline", "body_limit"]
# The outcomes counted in ``DeliveryStats`` and reported to ``on_outcome`` (metric label values).
OUTCOMES = ("delivered", "failed_attempt", "gave_up", "dropped", "rejected")


class _HideUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; a webhook URL's path and query hold its
    token, so those records are dropped (the senders log deliveries themselves, without URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request:")


logging.getLogger("httpx").addFilter(_HideUrls())


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, setting: str) -> tuple[str, bool]:
    """(scheme, host is loopback) of an ``http(s)://`` URL with a host; else ``UserError``.

    Messages name the URL by scheme and host only: its path and query often hold a token.
    """
    shown = mask_url(url, keep_path=False)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UserError(f"{setting} is not a valid URL ({shown})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        raise UserError(f"{setting} must be an https:// (or http://) URL with a host, got {shown}")
    return scheme, _is_loopback(host)


@dataclass
class DeliveryStats:
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


_STAT = {
    "delivered": "delivered",
    "failed_attempt": "failed_attempts",
    "gave_up": "gave_up",
    "dropped": "dropped",
    "rejected": "rejected",
}


@dataclass(frozen=True, slots=True)
class _Item:
    keys: frozenset[str]  # the alerts this request carries (ordering)
    what: str  # for logs: "alert <id> (<kind>)", never PHI
    body: Any  # JSON
    headers: dict[str, str] = field(default_factory=dict)


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


class AlertSender:
    """POSTs queued JSON requests to ``url`` from ``concurrency`` background senders; call
    ``enqueue`` from the loop's thread. ``name`` prefixes its log lines (``webhook``, ...).

    Each attempt must finish within ``timeout`` seconds, response body included, and reads at
    most ``max_response_bytes`` of that body. Retries connection errors, timeouts, 429 and 5xx
    with exponential back-off and jitter (a Retry-After header wins, capped at ``backoff_max``),
    up to ``max_attempts`` POSTs per request; any other non-2xx status is final at once, since
    resending the same body cannot fix it. The status decides: a 2xx whose body is cut short is
    delivered. A sender waits out its request's back-off, so the other senders carry on meanwhile.
    ``on_cutoff`` is told the reason of every attempt cut short, ``on_outcome`` every count added
    to ``stats`` (an ``OUTCOMES`` value; the worker counts both as metrics).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        timeout: float,
        max_attempts: int,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        queue_size: int = 10_000,
        concurrency: int = 4,
        max_response_bytes: int = 65_536,
        on_cutoff: Callable[[Cutoff], None] | None = None,
        on_outcome: Callable[[str], None] | None = None,
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
        self.name = name
        self._url = url
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._queue_size = queue_size
        self._concurrency = concurrency
        self._max_response_bytes = max_response_bytes
        self._on_cutoff = on_cutoff
        self._on_outcome = on_outcome
        # Queued requests, oldest first, by number; ``_busy`` holds the alerts that have a
        # request with a sender (in flight or waiting out a back-off).
        self._waiting: OrderedDict[int, _Item] = OrderedDict()
        self._numbers = itertools.count()
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._closed = False
        self.stats = DeliveryStats()

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken by a sender."""
        return len(self._waiting)

    @property
    def closed(self) -> bool:
        return self._closed

    def count(self, outcome: str, n: int = 1) -> None:
        """Add ``n`` to one ``OUTCOMES`` count, and tell ``on_outcome``."""
        attr = _STAT[outcome]
        setattr(self.stats, attr, getattr(self.stats, attr) + n)
        if self._on_outcome is not None:
            try:
                for _ in range(n):
                    self._on_outcome(outcome)
            except Exception as exc:  # counting must never break a delivery
                logger.error("%s outcome counter failed: %s", self.name, type(exc).__name__)

    def enqueue(
        self, keys: Iterable[str], what: str, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        """Queue one request; never blocks and never raises (the stream must not stall)."""
        try:
            if self._closed:
                self.count("dropped")
                return
            item = _Item(frozenset(keys), what, body, headers or {})
            if len(self._waiting) >= self._queue_size:
                _, old = self._waiting.popitem(last=False)
                self.count("dropped")
                logger.warning("%s queue full: dropped %s", self.name, old.what)
            self._waiting[next(self._numbers)] = item
            self._idle.clear()
            self._wake.set()
        except Exception as exc:
            self.count("dropped")
            logger.error("%s could not queue an alert: %s", self.name, type(exc).__name__)

    async def start(self) -> None:
        """Open the HTTP client and start the senders (requests enqueued earlier are kept)."""
        if self._senders:
            return
        self._closed = False
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,  # a redirect could point the alert (PHI) anywhere
            headers={
                "User-Agent": f"portal-pulse-{self.name}",
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",  # the bound counts bytes on the wire
            },
            limits=httpx.Limits(max_connections=self._concurrency),
        )
        self._senders = [
            asyncio.create_task(self._send_loop(), name=f"portal-pulse-{self.name}-{i}")
            for i in range(self._concurrency)
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting requests, deliver what is queued for up to ``drain_timeout`` s, then
        quit. Whatever is still undelivered after that is counted as dropped."""
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
            self.count("dropped", left)
            logger.warning("%s stopped with %d requests undelivered", self.name, left)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _take(self) -> _Item | None:
        """The oldest queued request none of whose alerts is busy or in an older queued
        request, its alerts marked busy."""
        blocked = set(self._busy)
        for number, item in self._waiting.items():
            if blocked.isdisjoint(item.keys):
                del self._waiting[number]  # iteration ends here
                self._busy.update(item.keys)
                return item
            blocked.update(item.keys)
        return None

    async def _send_loop(self) -> None:
        while True:
            item = self._take()
            if item is None:
                self._wake.clear()  # nothing takeable now; enqueue() and finished sends set it
                await self._wake.wait()
                continue
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                self.count("dropped")  # interrupted by stop()
                raise
            except Exception as exc:  # the worker must outlive any single delivery
                self.count("gave_up")
                logger.error(
                    "%s delivery of %s failed: %s", self.name, item.what, type(exc).__name__
                )
            finally:
                self._busy.difference_update(item.keys)
                self._wake.set()  # the alerts' next requests, if queued, may go now
                if not self._waiting and not self._busy:
                    self._idle.set()

    async def _deliver(self, item: _Item) -> None:
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._post(item)
            except _Retry as retry:
                self.count("failed_attempt")
                if attempt == self._max_attempts:
                    self.count("gave_up")
                    logger.warning(
                        "%s gave up on %s after %d attempts: %s",
                        self.name, item.what, attempt, retry.reason,
                    )  # fmt: skip
                    return
                delay = self._delay(attempt, retry.wait)
                logger.info(
                    "%s attempt %d for %s failed (%s); retrying in %.2fs",
                    self.name, attempt, item.what, retry.reason, delay,
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
                    "POST", self._url, json=item.body, headers=item.headers
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
            self.count("delivered")
            return
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}", _retry_after(retry_after, datetime.now(UTC)))
        self.count("failed_attempt")
        self.count("gave_up")
        logger.warning("%s rejected %s with HTTP %d: not retried", self.name, item.what, status)

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
                "%s attempt for %s passed its %.3gs deadline: connection closed",
                self.name, item.what, self._timeout,
            )  # fmt: skip
        else:
            self.stats.body_cutoffs += 1
            logger.warning(
                "%s response for %s is over %d bytes: stopped reading, connection closed",
                self.name, item.what, self._max_response_bytes,
            )  # fmt: skip
        if self._on_cutoff is not None:
            try:
                self._on_cutoff(reason)
            except Exception as exc:  # counting must never break a delivery
                logger.error("%s cutoff counter failed: %s", self.name, type(exc).__name__)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Back-off before the next attempt: Retry-After if given, else exponential with jitter."""
        if retry_after is not None:
            return min(retry_after, self._backoff_max)
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 -- back-off jitter, not a secret
