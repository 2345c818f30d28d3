"""``portal-pulse config check``: each practice's effective rules, for review before they go live.

Shows what the pipeline will use after inheritance (built-in defaults → ``default`` → the
practice), so a reviewer sees the merged result rather than the diff in the YAML.
"""

from __future__ import annotations

from pathlib import Path

from portal_pulse.domain.practices import END_OF_BUSINESS_DAY, PracticeConfig, Practices, SlaTarget

__all__ = ["describe_practice", "describe_practices"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _target(target: SlaTarget) -> str:
    if target == END_OF_BUSINESS_DAY:
        return "end of the business day"
    minutes = float(target)
    text = f"{minutes:g} business minutes"
    if minutes >= 60 and minutes % 60 == 0:
        text += f" ({minutes / 60:g} business hours)"
    return text


def _hours(config: PracticeConfig) -> str:
    week = config.calendar.weekly_hours
    parts = []
    for day, name in enumerate(_DAYS):
        intervals = week.get(day, ())
        spans = ",".join(
            f"{opens:%H:%M}-{'24:00' if closes.hour == 0 and closes.minute == 0 else f'{closes:%H:%M}'}"
            for opens, closes in intervals
        )
        parts.append(f"{name} {spans or 'closed'}")
    return ", ".join(parts)


def describe_practice(config: PracticeConfig, title: str) -> list[str]:
    holidays = sorted(config.calendar.holidays)
    stale = config.stale
    sla = config.sla
    return [
        title,
        f"  time zone         {config.timezone}",
        f"  hours             {_hours(config)}",
        f"  holidays          {', '.join(d.isoformat() for d in holidays) or 'none'}",
        f"  SLA internal      {_target(sla.internal_target)}",
        f"  SLA promise       {_target(sla.external_promise)}",
        f"  at risk after     {sla.at_risk_fraction:.0%} of the internal target",
        f"  follow-ups        invitation not activated {stale.invite_not_activated_days} d, "
        f"no first login {stale.no_first_login_days} d, "
        f"app not installed {stale.app_not_installed_days} d, dormant {stale.dormant_days} d",
        f"  roster look-back  {config.roster_lookback_days} days",
    ]


def describe_practices(practices: Practices, path: Path) -> str:
    listed = practices.listed_ids
    lines = [
        f"{path}: valid; {len(listed)} practice{'s' if len(listed) != 1 else ''} listed, "
        "'default' applies to every other practice",
        "",
        *describe_practice(practices.default, "default (any practice not listed)"),
    ]
    for practice_id in listed:
        lines += ["", *describe_practice(practices.for_practice(practice_id), practice_id)]
    return "\n".join(lines) + "\n"
