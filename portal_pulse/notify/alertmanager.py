"""Alertmanager sink: every alert version POSTed to Alertmanager's v2 API (``/api/v2/alerts``).

Alertmanager treats an alert it has not heard of for ``resolve_timeout`` (5 m by default) as
resolved, and one whose ``endsAt`` has passed as resolved at once. So:

- a raise is sent with ``startsAt`` = ``raised_at`` and ``endsAt`` = now + ``RESEND_LIFETIMES``
  resend periods, and kept in a bounded in-memory set of open alerts; every resend period the
  open ones are sent again (in batches) with a fresh ``endsAt``, so they stay active while the
  worker lives and expire a few periods after it stops;
- a resolution or a withdrawal (SPEC §7.1) is sent with ``endsAt`` = ``resolved_at`` or
  ``withdrawn_at`` (never after now, never before ``startsAt``) and leaves the open set; a
  withdrawal also says so in the ``withdrawn`` annotation.

The open set holds only alerts this worker has seen since it started: after a restart an alert
raised before it is not re-sent, and Alertmanager resolves it when its last ``endsAt`` passes,
unless its resolution arrives first. Alerts older than the newest ``max_open`` are let go the same
way (counted in ``open_evicted``).

Labels identify and route; none carries a patient (portal_pulse/notify/describe.py). Delivery is
``AlertSender``'s: bounded queue, retries with back-off, per-alert ordering (a resend batch never
overtakes an alert's resolution queued before it, nor the other way round), never the stream's
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from portal_pulse.domain.records import Alert
from portal_pulse.notify.describe import (
    alert_link,
    alert_name,
    check_link_template,
    local,
    severity,
    summary,
    zone_lookup,
)
from portal_pulse.notify.sender import AlertSender, check_url
from portal_pulse.notify.webhook import alert_event
from portal_pulse.reports.alerts import iso_z
from portal_pulse.settings import Settings

if TYPE_CHECKING:
    from portal_pulse.metrics import PipelineMetrics

__all__ = [
    "RESEND_BATCH",
    "RESEND_LIFETIMES",
    "AlertmanagerSink",
    "alertmanager_alert",
    "alertmanager_from_settings",
]

logger = logging.getLogger(__name__)

RESEND_LIFETIMES = 3  # an open alert's endsAt: this many resend periods ahead
RESEND_BATCH = 500  # alerts per resend POST


def alertmanager_alert(
    alert: Alert,
    *,
    now: datetime,
    zone: str,
    lifetime: timedelta,
    link_template: str | None = None,
) -> dict[str, Any]:
    """The v2 API's ``postableAlert`` for this version (labels, annotations, times)."""
    event = alert_event(alert)
    labels = {
        "alertname": alert_name(alert.kind),
        "alert_id": alert.alert_id,
        "practice_id": alert.practice_id,
        "kind": alert.kind,
        "staff_pool": alert.staff_pool or "",
        "category": alert.category or "",
        "severity": severity(alert.kind),
    }
    annotations = {
        "summary": summary(alert, zone),
        "due": local(alert.due_at, zone) or "",
        "raised": local(alert.raised_at, zone) or "",
        "status": event,
    }
    if alert.resolved_at is not None and event == "resolved":
        annotations["resolved"] = local(alert.resolved_at, zone) or ""
    if alert.withdrawn_at is not None:
        annotations["withdrawn"] = (
            f"withdrawn {local(alert.withdrawn_at, zone)}: later data showed this alert "
            "should not have fired"
        )
    link = alert_link(link_template, alert)
    if link:
        annotations["link"] = link
    starts = _aware(alert.raised_at)
    end = alert.withdrawn_at or alert.resolved_at
    ends = now + lifetime if end is None else min(_aware(end), now)
    body: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},  # an empty label is no label
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": iso_z(starts),
        "endsAt": iso_z(max(ends, starts)),
    }
    if link:
        body["generatorURL"] = link
    return body


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _what(alert: Alert) -> str:
    return f"alert {alert.alert_id} ({alert.kind})"


class AlertmanagerSink(AlertSender):
    """Sends alerts to Alertmanager at ``base_url`` and re-sends the open ones every
    ``resend_seconds``; call ``submit`` from the loop's thread. ``zone_of`` maps a practice to
    its IANA zone (annotations show practice time)."""

    def __init__(
        self,
        base_url: str,
        *,
        zone_of: Callable[[str], str],
        resend_seconds: float = 60.0,
        max_open: int = 10_000,
        link_template: str | None = None,
        **sender: Any,
    ) -> None:
        if resend_seconds <= 0:
            raise ValueError("resend_seconds must be positive")
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        check_link_template(link_template)
        super().__init__(base_url.rstrip("/") + "/api/v2/alerts", name="alertmanager", **sender)
        self._zone_of = zone_of
        self._resend_seconds = resend_seconds
        self._lifetime = timedelta(seconds=resend_seconds * RESEND_LIFETIMES)
        self._max_open = max_open
        self._link_template = link_template
        self._open: OrderedDict[str, Alert] = OrderedDict()
        self._resender: asyncio.Task[None] | None = None
        self.open_evicted = 0
        self.resends = 0

    @property
    def open_alerts(self) -> int:
        """Alerts raised and not yet resolved or withdrawn, as far as this worker has seen."""
        return len(self._open)

    def _body(self, alert: Alert, now: datetime) -> dict[str, Any]:
        return alertmanager_alert(
            alert,
            now=now,
            zone=self._zone_of(alert.practice_id),
            lifetime=self._lifetime,
            link_template=self._link_template,
        )

    def submit(self, alert: Alert) -> None:
        """Queue one alert version; never blocks and never raises (the stream must not stall)."""
        try:
            if self.closed:
                self.count("dropped")
                return
            if alert_event(alert) == "raised":
                self._open[alert.alert_id] = alert
                self._open.move_to_end(alert.alert_id)
                while len(self._open) > self._max_open:
                    _, old = self._open.popitem(last=False)
                    self.open_evicted += 1
                    logger.warning(
                        "alertmanager: more than %d open alerts; %s is no longer re-sent",
                        self._max_open, _what(old),
                    )  # fmt: skip
            else:
                self._open.pop(alert.alert_id, None)
            body = self._body(alert, datetime.now(UTC))
            self.enqueue([alert.alert_id], _what(alert), [body])
        except Exception as exc:
            self.count("dropped")
            logger.error("alertmanager could not queue an alert: %s", type(exc).__name__)

    def resend(self) -> int:
        """Queue every open alert again with a fresh ``endsAt``; returns how many."""
        now = datetime.now(UTC)
        alerts = list(self._open.values())
        for i in range(0, len(alerts), RESEND_BATCH):
            batch = alerts[i : i + RESEND_BATCH]
            try:
                bodies = [self._body(a, now) for a in batch]
            except Exception as exc:
                logger.error("alertmanager resend failed: %s", type(exc).__name__)
                continue
            self.enqueue([a.alert_id for a in batch], f"resend of {len(batch)} open alerts", bodies)
        self.resends += 1
        return len(alerts)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(self._resend_seconds)
            self.resend()

    async def start(self) -> None:
        await super().start()
        if self._resender is None:
            self._resender = asyncio.create_task(
                self._resend_loop(), name="portal-pulse-alertmanager-resend"
            )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop re-sending, then drain as ``AlertSender.stop`` does. Open alerts stay active in
        Alertmanager until their last ``endsAt`` (a few resend periods)."""
        if self._resender is not None:
            self._resender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resender
            self._resender = None
        await super().stop(drain_timeout)


def alertmanager_from_settings(
    settings: Settings, metrics: PipelineMetrics | None = None
) -> AlertmanagerSink | None:
    """The configured sink, or None when no ``alertmanager_url`` is set (``UserError`` for a
    URL or link template that cannot work). Timeout, attempts and senders: the webhook's."""
    if not settings.alertmanager_url:
        return None
    check_url(settings.alertmanager_url, "PORTAL_PULSE_ALERTMANAGER_URL")
    on_outcome = None
    if metrics is not None:
        counter = metrics.alert_sink_deliveries
        on_outcome = lambda outcome: counter.labels("alertmanager", outcome).inc()  # noqa: E731
    return AlertmanagerSink(
        settings.alertmanager_url,
        zone_of=zone_lookup(settings.practices_file),
        resend_seconds=settings.alertmanager_resend_seconds,
        max_open=settings.alertmanager_max_open,
        link_template=settings.alert_link_template,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        concurrency=settings.webhook_concurrency,
        max_response_bytes=settings.webhook_max_response_bytes,
        on_outcome=on_outcome,
    )
