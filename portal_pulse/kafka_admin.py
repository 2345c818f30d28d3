"""Creates the pipeline's topics with their partition counts before anything produces to them."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient, NewTopic

from portal_pulse.settings import Settings

__all__ = [
    "CLEAN_PARTITIONED_TABLES",
    "RAW_PARTITIONED_TABLES",
    "STATE_TABLE_SUFFIX",
    "ensure_topics",
]

# The ingest agent's tables, partitioned like the raw topics (streams/ingest_agent.py).
RAW_PARTITIONED_TABLES = ("dedup", "watermarks")

# The state machines' tables are "<machine>-<suffix>". v2: packed bytes with integer instants
# (portal_pulse.engine), one follow-up record per patient holding its last login. A worker of an
# earlier version kept JSON states in "<machine>-state"; this one starts its tables empty.
STATE_TABLE_SUFFIX = "state-v2"

# State tables partitioned like the clean topic (streams/processor_agent.py).
CLEAN_PARTITIONED_TABLES = (
    f"sla-{STATE_TABLE_SUFFIX}",
    f"followups-{STATE_TABLE_SUFFIX}",
    "live-state",
    "clocks",
)

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    names = settings.topics
    wanted = {name: settings.raw_partitions for name in names.raw.values()}
    wanted[names.dead_letter] = settings.raw_partitions
    for name in (names.clean, names.alerts, names.responses, names.live_metrics):
        wanted[name] = settings.clean_partitions
    # The state tables' changelogs (Faust names them "<app_id>-<table>-changelog"), compacted.
    # Created here, before any agent runs, so the first checkpoint never waits for them.
    changelogs = {
        f"{settings.app_id}-{table}-changelog": settings.raw_partitions
        for table in RAW_PARTITIONED_TABLES
    }
    for table in CLEAN_PARTITIONED_TABLES:
        changelogs[f"{settings.app_id}-{table}-changelog"] = settings.clean_partitions
    admin = AdminClient({"bootstrap.servers": bootstrap, **settings.kafka_client_config()})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(n, p, 1) for n, p in wanted.items() if n not in existing]
    new += [
        NewTopic(n, p, 1, config={"cleanup.policy": "compact"})
        for n, p in changelogs.items()
        if n not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=30).items():
        try:
            fut.result()
            logger.info("created topic %s", name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
