"""How an alert reads on a pager (Alertmanager, PagerDuty): name, severity, summary, due time in
the practice's zone and an optional link, all without the patient.

Nothing here may carry ``subject_id`` (a thread id, or for follow-ups the patient pseudonym) or
``patient_pseudonym``: routing and reading need the practice, the kind, the pool and the category;
the person on call finds the patient through the practice's own tools. ``alert_id`` is allowed: it
is a SHA-256 of kind, practice, thread and clock start, names the alert and reveals no patient.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from portal_pulse.domain.records import Alert
from portal_pulse.errors import UserError
from portal_pulse.reports.local_time import format_local

__all__ = [
    "LINK_FIELDS",
    "alert_link",
    "alert_name",
    "check_link_template",
    "pagerduty_severity",
    "severity",
    "summary",
    "zone_lookup",
]

LINK_FIELDS = frozenset({"practice_id", "kind"})

_TITLES = {
    "sla.at_risk": "SLA at risk",
    "sla.internal_missed": "internal reply target missed",
    "sla.breached": "SLA breached",
    "enrollment.invite_not_activated": "portal invitation not activated",
    "enrollment.no_first_login": "no first portal login",
    "enrollment.app_not_installed": "portal app not installed",
    "enrollment.dormant": "portal account dormant",
}


def alert_name(kind: str) -> str:
    """``sla.breached`` → ``PortalPulseSlaBreached``: one Alertmanager alertname per kind."""
    words = kind.replace(".", "_").split("_")
    return "PortalPulse" + "".join(w[:1].upper() + w[1:] for w in words if w)


def severity(kind: str) -> str:
    """Alertmanager's ``severity`` label: a missed target or a breached promise is ``critical``
    (the patient has waited past what the practice promised), an SLA at risk a ``warning``
    (there is still time to reply), an enrollment follow-up ``info`` (outreach for the front
    desk's working day; nothing to wake anyone for)."""
    if kind in ("sla.internal_missed", "sla.breached"):
        return "critical"
    if kind == "sla.at_risk":
        return "warning"
    return "info"


def pagerduty_severity(kind: str) -> str:
    """PagerDuty's four levels: breached ``critical``, internal target missed ``error`` (the
    promise to the patient still holds), at risk ``warning``, follow-ups ``info``."""
    return {"sla.breached": "critical", "sla.internal_missed": "error"}.get(kind, severity(kind))


def check_link_template(template: str | None) -> None:
    """Refuse a link template that uses anything but ``{practice_id}`` and ``{kind}`` (no
    patient field may reach a URL), or that is not a well-formed format string."""
    if not template:
        return
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise UserError(
            f"PORTAL_PULSE_ALERT_LINK_TEMPLATE is not a valid template: {exc}"
        ) from None
    unknown = fields - LINK_FIELDS
    if unknown:
        raise UserError(
            f"PORTAL_PULSE_ALERT_LINK_TEMPLATE may use only {{practice_id}} and {{kind}}, "
            f"not {', '.join(sorted('{' + f + '}' for f in unknown))}"
        )


def alert_link(template: str | None, alert: Alert) -> str | None:
    """The configured link for this alert (values URL-quoted), or None."""
    if not template:
        return None
    return template.format(
        practice_id=quote(alert.practice_id, safe=""), kind=quote(alert.kind, safe="")
    )


def summary(alert: Alert, zone: str) -> str:
    """One line for a pager: what, where, which pool and category, due when (practice time)."""
    what = _TITLES.get(alert.kind, alert.kind)
    parts = [f"practice {alert.practice_id}"]
    if alert.staff_pool:
        parts.append(f"{alert.staff_pool} pool")
    if alert.category:
        parts.append(f"category {alert.category}")
    return f"{what}: {', '.join(parts)}; due {format_local(alert.due_at, zone)}"


def local(at: datetime | None, zone: str) -> str | None:
    return None if at is None else format_local(at, zone)


def zone_lookup(practices_file: str | Path | None) -> Callable[[str], str]:
    """practice_id → its IANA zone, from the practices file read once (the default rules for
    an unlisted practice)."""
    from portal_pulse.domain.practices import Practices

    practices = Practices.load(practices_file)
    return lambda practice_id: practices.for_practice(practice_id).timezone
