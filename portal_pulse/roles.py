"""What each ``portal-pulse worker --role`` runs, which consumer group it joins, what it reads.

- ``all`` (default): one process does everything, as a single worker always has; group
  ``<app_id>``.
- ``process``: ingest, processors and the webhook notifier; opens no ClickHouse connection and
  writes no rows (the clean topic carries the ``events`` rows' content, the other tables have
  their topics). Any number run in group ``<app_id>`` and share the partitions.
- ``sink``: the ClickHouse writers only (events from the clean topic, dead letters, alerts,
  response facts, live metrics), in a group of their own, ``<app_id>-sink``, so process workers'
  assignments never move because a sink comes or goes. With ``chdb://`` exactly one runs (chDB
  opens a path in one process); with a ClickHouse server, as many as you like.
"""

from __future__ import annotations

from typing import Literal

from portal_pulse.settings import Settings

__all__ = ["ROLES", "Role", "group_id", "topics_read", "writes_clickhouse"]

Role = Literal["all", "process", "sink"]
ROLES: tuple[Role, ...] = ("all", "process", "sink")


def group_id(settings: Settings, role: str = "all") -> str:
    """The Kafka consumer group (and Faust app id) of a worker of this role."""
    return f"{settings.app_id}-sink" if role == "sink" else settings.app_id


def writes_clickhouse(role: str) -> bool:
    return role != "process"


def topics_read(settings: Settings, role: str = "all") -> list[str]:
    """Every topic a worker of this role consumes (``--exit-when-idle`` waits for all of them)."""
    names = settings.topics
    processing = [*names.raw.values(), names.clean]
    outputs = [names.dead_letter, names.alerts, names.responses, names.live_metrics]
    if role == "process":
        # The notifier reads the alerts topic only when an alert sink is configured.
        return [*processing, *([names.alerts] if settings.delivers_alerts else [])]
    if role == "sink":
        return [names.clean, *outputs]
    return [*processing, *outputs]
