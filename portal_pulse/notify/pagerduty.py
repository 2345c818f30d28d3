"""PagerDuty sink: alerts as Events API v2 events (``POST https://events.pagerduty.com/v2/enqueue``).

A raise is a ``trigger`` with ``dedup_key`` = ``alert_id``; a resolution or a withdrawal (SPEC §7.1)
is a ``resolve`` with the same key, so PagerDuty closes the alert either way. A raise issued again
after a withdrawal triggers a new PagerDuty alert (PagerDuty opens a new one for a key whose alert
is resolved). The payload names the practice (``group``), the kind (``class``), the staff pool
(``component``) and the category, never the patient (portal_pulse/notify/describe.py).

The routing key is a secret: it travels only in the request body, which is never logged. Delivery
is ``AlertSender``'s (retries 429 and 5xx with back-off, per-alert ordering, never the stream's
time); PagerDuty answers 202 to an accepted event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.notify.describe import (
    alert_link,
    check_link_template,
    local,
    pagerduty_severity,
    summary,
    zone_lookup,
)
from portal_pulse.notify.sender import AlertSender, check_url
from portal_pulse.notify.webhook import alert_event
from portal_pulse.reports.alerts import iso_z
from portal_pulse.settings import Settings

if TYPE_CHECKING:
    from portal_pulse.metrics import PipelineMetrics

__all__ = ["SOURCE", "PagerDutySink", "pagerduty_event", "pagerduty_from_settings"]

logger = logging.getLogger(__name__)

SOURCE = "portal-pulse"  # payload.source: the system that saw the problem
SUMMARY_MAX = 1024  # the documented limit of payload.summary


def pagerduty_event(
    alert: Alert, routing_key: str, *, zone: str, link_template: str | None = None
) -> dict[str, Any]:
    """The Events API v2 event for this alert version: ``trigger`` for a raise, ``resolve`` for
    a resolution or a withdrawal."""
    if alert_event(alert) != "raised":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.alert_id}
    details = {
        "alert_id": alert.alert_id,
        "kind": alert.kind,
        "practice_id": alert.practice_id,
        "staff_pool": alert.staff_pool,
        "category": alert.category,
        "due": local(alert.due_at, zone),
        "due_at": iso_z(alert.due_at),
        "raised_at": iso_z(alert.raised_at),
    }
    payload: dict[str, Any] = {
        "summary": summary(alert, zone)[:SUMMARY_MAX],
        "source": SOURCE,
        "severity": pagerduty_severity(alert.kind),
        "timestamp": iso_z(alert.raised_at),
        "group": alert.practice_id,
        "class": alert.kind,
        "custom_details": {k: v for k, v in details.items() if v is not None},
    }
    if alert.staff_pool:
        payload["component"] = alert.staff_pool
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.alert_id,
        "payload": payload,
        "client": "Portal Pulse",
    }
    link = alert_link(link_template, alert)
    if link:
        event["links"] = [{"href": link, "text": "Portal Pulse"}]
    return event


class PagerDutySink(AlertSender):
    """Sends alerts to PagerDuty's Events API v2 at ``url``; call ``submit`` from the loop's
    thread. ``zone_of`` maps a practice to its IANA zone (the summary shows practice time)."""

    def __init__(
        self,
        routing_key: str,
        *,
        zone_of: Callable[[str], str],
        url: str = "https://events.pagerduty.com/v2/enqueue",
        link_template: str | None = None,
        **sender: Any,
    ) -> None:
        if not routing_key:
            raise ValueError("routing_key must not be empty")
        check_link_template(link_template)
        super().__init__(url, name="pagerduty", **sender)
        self._routing_key = routing_key
        self._zone_of = zone_of
        self._link_template = link_template

    def submit(self, alert: Alert) -> None:
        """Queue one alert version; never blocks and never raises (the stream must not stall)."""
        try:
            if self.closed:
                self.count("dropped")
                return
            event = pagerduty_event(
                alert,
                self._routing_key,
                zone=self._zone_of(alert.practice_id),
                link_template=self._link_template,
            )
            self.enqueue([alert.alert_id], f"alert {alert.alert_id} ({alert.kind})", event)
        except Exception as exc:
            self.count("dropped")
            logger.error("pagerduty could not queue an alert: %s", type(exc).__name__)


def pagerduty_from_settings(
    settings: Settings, metrics: PipelineMetrics | None = None
) -> PagerDutySink | None:
    """The configured sink, or None without a routing key (``UserError`` for a URL or link
    template that cannot work, or a plain-http URL beyond loopback: the body holds the key).
    Timeout, attempts and senders: the webhook's."""
    if settings.pagerduty_routing_key is None:
        return None
    key = settings.pagerduty_routing_key.get_secret_value()
    if not key:
        raise UserError("PORTAL_PULSE_PAGERDUTY_ROUTING_KEY is empty")
    scheme, loopback = check_url(settings.pagerduty_url, "PORTAL_PULSE_PAGERDUTY_URL")
    if scheme != "https" and not loopback:
        raise UserError(
            "PORTAL_PULSE_PAGERDUTY_URL must be https:// (the routing key is in every request)"
        )
    on_outcome = None
    if metrics is not None:
        counter = metrics.alert_sink_deliveries
        on_outcome = lambda outcome: counter.labels("pagerduty", outcome).inc()  # noqa: E731
    return PagerDutySink(
        key,
        zone_of=zone_lookup(settings.practices_file),
        url=settings.pagerduty_url,
        link_template=settings.alert_link_template,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        concurrency=settings.webhook_concurrency,
        max_response_bytes=settings.webhook_max_response_bytes,
        on_outcome=on_outcome,
    )
