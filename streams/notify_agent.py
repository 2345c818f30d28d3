"""Alerts topic → the alert sinks: the webhook, Alertmanager and PagerDuty, each when configured.

Delivery never holds up the stream: each sink queues, delivers from a small pool of senders
(each attempt under one overall deadline and a bound on the response body read), retries with
back-off in the background and counts what it could not deliver (portal_pulse/notify/sender.py).
A record is done once every sink has it queued; in the all role ``sink-alerts`` reads the same
records, and the loop commits an offset only once both are done with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from portal_pulse.notify.alertmanager import alertmanager_from_settings
from portal_pulse.notify.pagerduty import pagerduty_from_settings
from portal_pulse.notify.webhook import notifier_from_settings
from streams.codecs import alert_from_bytes
from streams.runtime import Runtime
from streams.sink_agents import check_record

__all__ = ["Notify", "register"]

logger = logging.getLogger(__name__)


class Notify:
    name = "notify"

    def __init__(self, rt: Runtime, sinks: list[Any]) -> None:
        self.rt = rt
        self.sinks = sinks
        settings = rt.settings
        self.feed = rt.loop.feed("notify", [settings.topics.alerts], settings.sink_batch_size, 0.05)

    async def run(self) -> None:
        for sink in self.sinks:
            await sink.start()
        codec, feed = self.rt.alert_codec, self.feed
        async for taken in feed.batches():
            records = feed.current(taken)
            for msg in records:
                try:
                    # Parsed inside the guard: a record on the alerts topic that does not parse
                    # is skipped (sink-alerts dead-letters it) and delivery goes on.
                    alert = check_record(alert_from_bytes(codec, msg.value() or b""))
                except Exception as exc:
                    logger.error(
                        "notify: skipping an alert record %s:%s@%d: %s",
                        msg.topic(), msg.partition(), msg.offset(), type(exc).__name__,
                    )  # fmt: skip
                    continue
                for sink in self.sinks:
                    sink.submit(alert)  # never raises
            feed.done(records)

    async def close(self) -> None:
        await asyncio.gather(*(sink.stop(drain_timeout=5.0) for sink in self.sinks))
        for sink in self.sinks:
            logger.info("%s delivery stats: %s", sink.name, sink.stats)


def register(rt: Runtime) -> Notify | None:
    # Each refuses (UserError) a URL that cannot work; the webhook also plain http:// beyond
    # loopback with PORTAL_PULSE_WEBHOOK_REQUIRE_TLS, and warns about it otherwise.
    notifier = notifier_from_settings(rt.settings, rt.metrics)
    alertmanager = alertmanager_from_settings(rt.settings, rt.metrics)
    pagerduty = pagerduty_from_settings(rt.settings, rt.metrics)
    sinks = [s for s in (notifier, alertmanager, pagerduty) if s is not None]
    # /status and the webhook metrics read the webhook's counters; the other sinks count
    # themselves (portal_pulse_alert_sink_deliveries_total).
    rt.notifier = notifier
    if not sinks:
        return None
    # httpx logs request URLs at INFO; a webhook URL may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Notify(rt, sinks)
