"""Alerts topic → the alert sinks: the webhook, Alertmanager and PagerDuty, each when configured.

Delivery never holds up the stream: each sink queues, delivers from a small pool of senders
(each attempt under one overall deadline and a bound on the response body read), retries with
back-off in the background and counts what it could not deliver (portal_pulse/notify/sender.py).
"""

from __future__ import annotations

import asyncio
import logging

import faust

from portal_pulse.notify.alertmanager import alertmanager_from_settings
from portal_pulse.notify.pagerduty import pagerduty_from_settings
from portal_pulse.notify.webhook import notifier_from_settings
from streams.app import Runtime
from streams.checkpoint import GatedConsumer
from streams.codecs import alert_from_bytes
from streams.sink_agents import check_record

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(app: faust.App, rt: Runtime) -> None:
    # Each refuses (UserError) a URL that cannot work; the webhook also plain http:// beyond
    # loopback with PORTAL_PULSE_WEBHOOK_REQUIRE_TLS, and warns about it otherwise.
    notifier = notifier_from_settings(rt.settings, rt.metrics)
    alertmanager = alertmanager_from_settings(rt.settings, rt.metrics)
    pagerduty = pagerduty_from_settings(rt.settings, rt.metrics)
    sinks = [s for s in (notifier, alertmanager, pagerduty) if s is not None]
    if not sinks:
        return
    # httpx logs request URLs at INFO; a webhook URL may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    @app.agent(rt.topics.alerts, name="notify")
    async def notify(stream: faust.StreamT) -> None:
        for sink in sinks:
            await sink.start()
        try:
            async for data in stream:
                # Submitted is as far as the sinks go (module docstring): release the offset
                # for the gated consumer. In the all role sink-alerts acknowledges the same
                # record too, and it is committed only once both have.
                event = stream.current_event
                if event is not None and isinstance(app.consumer, GatedConsumer):
                    app.consumer.release(event.message)
                try:
                    # Parsed inside the guard: a record on the alerts topic that does not parse
                    # is skipped (sink-alerts dead-letters it) and delivery goes on.
                    alert = check_record(alert_from_bytes(rt.alert_codec, data or b""))
                except Exception as exc:
                    where = f" {event.message.tp}@{event.message.offset}" if event else ""
                    logger.error(
                        "notify: skipping an alert record%s: %s", where, type(exc).__name__
                    )
                    continue
                for sink in sinks:
                    sink.submit(alert)  # never raises
        finally:
            await asyncio.gather(*(sink.stop(drain_timeout=5.0) for sink in sinks))
            for sink in sinks:
                logger.info("%s delivery stats: %s", sink.name, sink.stats)

    # /status and the webhook metrics read the webhook's counters; the other sinks count
    # themselves (portal_pulse_alert_sink_deliveries_total).
    rt.notifier = notifier
