"""Pushing alerts to people: a JSON webhook (SPEC §8 fields), Alertmanager and PagerDuty, each
for every raised, resolved and withdrawn alert, through one delivery machinery (sender.py)."""

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
