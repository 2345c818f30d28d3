"""Alert webhook: every raised and every resolved alert POSTed as JSON, off the stream's path.

The stream must never wait on a pager, so ``submit`` only puts the alert on a bounded queue and a
single background task delivers it; one task working the queue in order keeps a raise ahead of its
resolution. When the queue is full the *oldest* entry is dropped: the newest alerts are the most
actionable, and a lost raise is harmless once its resolution (which repeats every field) arrives,
whereas a lost resolution would leave the receiver paging for a problem already over. ClickHouse's
``alerts`` table stays the complete record either way.

The body carries exactly the SPEC §8 fields plus ``event``. Patients appear only as pseudonyms
(SPEC §9); as a second line of defence an alert whose ``patient_pseudonym`` is not a 32-hex-digit
pseudonym is refused before it is queued. Logs name alerts by ``alert_id`` and kind only, never
the payload, and never the URL (webhook URLs often embed a token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from portal_pulse.domain.records import Alert
from portal_pulse.reports.alerts import ALERT_FIELDS, iso_z
from portal_pulse.settings import Settings

__all__ = ["WebhookNotifier", "WebhookStats", "alert_payload", "notifier_from_settings"]

logger = logging.getLogger(__name__)


class _HideUrls(logging.Filter):
    """httpx logs every request's full URL at INFO; a webhook URL's path and query hold its
    token, so those records are dropped (this module logs deliveries itself, without URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP Request:")


logging.getLogger("httpx").addFilter(_HideUrls())

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_INSTANTS = ("due_at", "resolved_at")


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body: SPEC §8 fields (instants ISO-8601 UTC with ``Z``) and raised/resolved."""
    body: dict[str, Any] = {name: getattr(alert, name) for name in ALERT_FIELDS}
    for name in _INSTANTS:
        body[name] = iso_z(body[name])
    body["event"] = "raised" if alert.resolved_at is None else "resolved"
    return body


@dataclass
class WebhookStats:
    """Counters for operators; ``failed_attempts`` counts every failed POST, retried or not."""

    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class _Item:
    alert_id: str
    kind: str
    body: dict[str, Any]


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
    """Delivers alerts to ``url`` from a background task; call ``submit`` from the loop's thread.

    Retries connection errors, timeouts, 429 and 5xx with exponential back-off and jitter (a
    Retry-After header wins, capped at ``backoff_max``), up to ``max_attempts`` POSTs per alert;
    any other non-2xx status is final at once, since resending the same body cannot fix it.
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
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._url = url
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = WebhookStats()

    @property
    def pending(self) -> int:
        """Alerts queued and not yet taken by the delivery task."""
        return self._queue.qsize()

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
            item = _Item(alert.alert_id, alert.kind, alert_payload(alert))
            if self._queue.full():
                old = self._queue.get_nowait()
                self._queue.task_done()
                self.stats.dropped += 1
                logger.warning("webhook queue full: dropped alert %s (%s)", old.alert_id, old.kind)
            self._queue.put_nowait(item)
        except Exception as exc:
            self.stats.dropped += 1
            logger.error("webhook could not queue an alert: %s", type(exc).__name__)

    async def start(self) -> None:
        """Open the HTTP client and start delivering (alerts submitted earlier are kept)."""
        if self._task is not None:
            return
        self._closed = False
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            headers={"User-Agent": "portal-pulse-webhook", "Content-Type": "application/json"},
        )
        self._task = asyncio.create_task(self._run(), name="portal-pulse-webhook")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting alerts, deliver what is queued for up to ``drain_timeout`` s, then quit.

        Whatever is still undelivered after that is counted as dropped.
        """
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        if left:
            self.stats.dropped += left
            logger.warning("webhook stopped with %d alerts undelivered", left)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
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
                self._queue.task_done()

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
        """One POST: returns on 2xx, raises ``_Retry`` when worth retrying, else gives up."""
        assert self._client is not None
        try:
            response = await self._client.post(
                self._url,
                json=item.body,
                headers={"Idempotency-Key": f"{item.alert_id}:{item.body['event']}"},
            )
        except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
            raise _Retry(type(exc).__name__) from None
        status = response.status_code
        if 200 <= status < 300:
            self.stats.delivered += 1
            return
        if status == 429 or status >= 500:
            wait = _retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            raise _Retry(f"HTTP {status}", wait)
        self.stats.failed_attempts += 1
        self.stats.gave_up += 1
        logger.warning(
            "webhook rejected alert %s (%s) with HTTP %d: not retried",
            item.alert_id, item.kind, status,
        )  # fmt: skip

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Back-off before the next attempt: Retry-After if given, else exponential with jitter."""
        if retry_after is not None:
            return min(retry_after, self._backoff_max)
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def notifier_from_settings(settings: Settings) -> WebhookNotifier | None:
    """The configured notifier, or None when no ``webhook_url`` is set."""
    if not settings.webhook_url:
        return None
    return WebhookNotifier(
        settings.webhook_url,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
    )
