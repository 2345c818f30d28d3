"""Alert webhook: every raised, resolved and withdrawn alert POSTed as JSON, off the stream's path.

Delivery is ``AlertSender``'s (portal_pulse/notify/sender.py): a bounded queue, a small pool of
senders, one overall deadline per attempt, a bound on the response body read, retries with
back-off, and per-alert ordering, so an alert's ``resolved`` or ``withdrawn`` never overtakes its
``raised``. ClickHouse's ``alerts`` table stays the complete record whatever is dropped.

The body carries exactly the SPEC §8 fields plus ``event`` (``raised``, ``resolved`` or
``withdrawn``: SPEC §7.1, later data showed the alert should not have fired). Each POST has an
``Idempotency-Key`` that names the version (``idempotency_key``). Patients appear only as pseudonyms
(SPEC §9); as a second line of defence an alert whose ``patient_pseudonym`` is not a 32-hex-digit
pseudonym is refused before it is queued. Logs name alerts by ``alert_id`` and kind only, never
the payload, and never the URL beyond its scheme and host (webhook URLs often embed a token).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.notify.sender import AlertSender, Cutoff, DeliveryStats, check_url
from portal_pulse.reports.alerts import ALERT_FIELDS, iso_z
from portal_pulse.settings import Settings, mask_url

if TYPE_CHECKING:
    from portal_pulse.metrics import PipelineMetrics

__all__ = [
    "Cutoff",
    "WebhookNotifier",
    "WebhookStats",
    "alert_event",
    "alert_payload",
    "check_webhook_url",
    "idempotency_key",
    "notifier_from_settings",
]

logger = logging.getLogger(__name__)

# The webhook's counters are the shared sender's (kept under their first name).
WebhookStats = DeliveryStats

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_INSTANTS = ("due_at", "resolved_at", "withdrawn_at")


def alert_event(alert: Alert) -> str:
    """What this version tells a pager: ``withdrawn`` wins over ``resolved`` over ``raised``."""
    if alert.withdrawn_at is not None:
        return "withdrawn"
    return "raised" if alert.resolved_at is None else "resolved"


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON body: SPEC §8 fields (instants ISO-8601 UTC with ``Z``) and the event."""
    body: dict[str, Any] = {name: getattr(alert, name) for name in ALERT_FIELDS}
    for name in _INSTANTS:
        body[name] = iso_z(body[name])
    body["event"] = alert_event(alert)
    return body


def idempotency_key(alert: Alert) -> str:
    """The ``Idempotency-Key`` of this version: the same for every copy of one version (a retry,
    a record processed again after a restart), different for different versions.

    ``<alert_id>:raised`` and ``<alert_id>:resolved`` for an alert's first raise and resolution,
    whose ``updated_at`` is the instant the rules give (``raised_at``; the later of it and
    ``resolved_at``). A version a correction issues (raised late, raised again after a
    withdrawal, say with another staff pool, or resolved after that) has a later
    ``updated_at``, and every withdrawal may be one of several: those keys end with
    ``:<updated_at in epoch ms>``, so a receiver that de-duplicates on the key never drops them
    (docs/operations.md, "Events and keys").
    """
    event = alert_event(alert)
    first = {
        "raised": alert.raised_at,
        "resolved": max(alert.resolved_at or alert.raised_at, alert.raised_at),
    }.get(event)
    if first is not None and alert.updated_at == first:
        return f"{alert.alert_id}:{event}"
    return f"{alert.alert_id}:{event}:{_epoch_ms(alert.updated_at)}"


def _epoch_ms(at: datetime) -> int:
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    return (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def check_webhook_url(url: str, *, require_tls: bool) -> str | None:
    """Refuse a URL that cannot work or, with ``require_tls``, plain ``http://`` beyond loopback.

    Returns a warning for plain ``http://`` beyond loopback when TLS is not required, else None.
    Messages name the URL by scheme and host only: its path and query often hold a token.
    """
    scheme, loopback = check_url(url, "PORTAL_PULSE_WEBHOOK_URL")
    if scheme == "https" or loopback:
        return None
    shown = mask_url(url, keep_path=False)
    if require_tls:
        raise UserError(
            f"PORTAL_PULSE_WEBHOOK_URL {shown} is plain http:// and "
            "PORTAL_PULSE_WEBHOOK_REQUIRE_TLS is on: use https:// (alerts carry PHI)"
        )
    return (
        f"webhook URL {shown} is plain http://: alerts (PHI) and the URL's token cross the "
        "network unencrypted; use https:// (PORTAL_PULSE_WEBHOOK_REQUIRE_TLS=true refuses this)"
    )


class WebhookNotifier(AlertSender):
    """Delivers alerts to ``url`` as SPEC §8 JSON bodies (see ``AlertSender`` for the delivery
    rules: deadline, body bound, retries, ordering); call ``submit`` from the loop's thread."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_attempts: int,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        queue_size: int = 10_000,
        concurrency: int = 4,
        max_response_bytes: int = 65_536,
        on_cutoff: Callable[[Cutoff], None] | None = None,
    ) -> None:
        super().__init__(
            url,
            name="webhook",
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            queue_size=queue_size,
            concurrency=concurrency,
            max_response_bytes=max_response_bytes,
            on_cutoff=on_cutoff,
        )

    def submit(self, alert: Alert) -> None:
        """Queue one alert version; never blocks and never raises (the stream must not stall)."""
        try:
            if self.closed:
                self.count("dropped")
                return
            if not _PSEUDONYM.match(alert.patient_pseudonym or ""):
                self.count("rejected")
                logger.error(
                    "webhook refused alert %s (%s): patient_pseudonym is not a pseudonym",
                    alert.alert_id, alert.kind,
                )  # fmt: skip
                return
            self.enqueue(
                [alert.alert_id],
                f"alert {alert.alert_id} ({alert.kind})",
                alert_payload(alert),
                {"Idempotency-Key": idempotency_key(alert)},
            )
        except Exception as exc:
            self.count("dropped")
            logger.error("webhook could not queue an alert: %s", type(exc).__name__)


def notifier_from_settings(
    settings: Settings, metrics: PipelineMetrics | None = None
) -> WebhookNotifier | None:
    """The configured notifier, or None when no ``webhook_url`` is set.

    Raises ``UserError`` for a URL that cannot work, or plain ``http://`` beyond loopback when
    ``webhook_require_tls`` is on; otherwise logs a warning for such a URL. With ``metrics``,
    attempts cut short are counted in ``portal_pulse_webhook_cutoffs_total``.
    """
    if not settings.webhook_url:
        return None
    warning = check_webhook_url(settings.webhook_url, require_tls=settings.webhook_require_tls)
    if warning:
        logger.warning("%s", warning)
    on_cutoff = None
    if metrics is not None:
        counter = metrics.webhook_cutoffs
        on_cutoff = lambda reason: counter.labels(reason).inc()  # noqa: E731
    return WebhookNotifier(
        settings.webhook_url,
        timeout=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        concurrency=settings.webhook_concurrency,
        max_response_bytes=settings.webhook_max_response_bytes,
        on_cutoff=on_cutoff,
    )
