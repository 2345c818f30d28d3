"""Alerts topic → the webhook notifier (only when a webhook URL is configured).

Delivery never holds up the stream: the notifier queues, delivers from a small pool of senders
(each attempt under one overall deadline and a bound on the response body read), retries with
back-off in the background and counts what it could not deliver.
"""

from __future__ import annotations

import logging

import faust

from portal_pulse.notify.webhook import notifier_from_settings
from streams.app import Runtime
from streams.checkpoint import GatedConsumer
from streams.codecs import alert_from_bytes
from streams.sink_agents import check_record

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(app: faust.App, rt: Runtime) -> None:
    # Refuses (UserError) a webhook URL that cannot work, or plain http:// beyond loopback
    # with PORTAL_PULSE_WEBHOOK_REQUIRE_TLS; warns about the latter otherwise.
    notifier = notifier_from_settings(rt.settings, rt.metrics)
    if notifier is None:
        return
    # httpx logs request URLs at INFO; a webhook URL may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    @app.agent(rt.topics.alerts, name="notify")
    async def notify(stream: faust.StreamT) -> None:
        await notifier.start()
        try:
            async for data in stream:
                # Submitted is as far as the notifier goes (module docstring): release the
                # offset for the gated consumer. In the all role sink-alerts acknowledges the
                # same record too, and it is committed only once both have.
                event = stream.current_event
                if event is not None and isinstance(app.consumer, GatedConsumer):
                    app.consumer.release(event.message)
                try:
                    # Parsed inside the guard: a record on the alerts topic that does not parse
                    # is skipped (sink-alerts dead-letters it) and delivery goes on.
                    notifier.submit(check_record(alert_from_bytes(rt.alert_codec, data or b"")))
                except Exception as exc:
                    where = f" {event.message.tp}@{event.message.offset}" if event else ""
                    logger.error(
                        "notify: skipping an alert record%s: %s", where, type(exc).__name__
                    )
        finally:
            await notifier.stop(drain_timeout=5.0)
            logger.info("webhook delivery stats: %s", notifier.stats)

    rt.notifier = notifier
