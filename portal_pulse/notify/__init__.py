"""Pushing alerts to people: a webhook for every raised, resolved and withdrawn alert (SPEC §8 fields)."""

from portal_pulse.notify.webhook import (
    WebhookNotifier,
    WebhookStats,
    alert_payload,
    check_webhook_url,
    notifier_from_settings,
)

__all__ = [
    "WebhookNotifier",
    "WebhookStats",
    "alert_payload",
    "check_webhook_url",
    "notifier_from_settings",
]
