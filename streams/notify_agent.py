"""Alerts topic → the webhook notifier (only when a webhook URL is configured).

Delivery never holds up the stream: the notifier queues, retries with back-off in the background
and counts what it could not deliver.
"""

from __future__ import annotations

import logging

import faust

from portal_pulse.notify.webhook import notifier_from_settings
from streams.app import Runtime
from streams.checkpoint import GatedConsumer
from streams.codecs import alert_from_bytes

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(app: faust.App, rt: Runtime) -> None:
    notifier = notifier_from_settings(rt.settings)
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
                    notifier.submit(alert_from_bytes(rt.alert_codec, data))
                except Exception as exc:  # one bad record must not stop delivery of the rest
                    logger.error("notify: skipping undecodable alert record: %s", exc)
        finally:
            await notifier.stop(drain_timeout=5.0)
            logger.info("webhook delivery stats: %s", notifier.stats)

    rt.notifier = notifier
