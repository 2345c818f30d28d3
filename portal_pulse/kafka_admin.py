"""Creates the pipeline's topics with their partition counts and retention before anything
produces to them, and keeps the retention of the topics that hold raw patient ids in line with
the settings."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from portal_pulse.settings import Settings

__all__ = [
    "CLEAN_PARTITIONED_TABLES",
    "RAW_PARTITIONED_TABLES",
    "STATE_TABLE_SUFFIX",
    "ensure_topics",
    "retention_configs",
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

_HOUR_MS = 3_600_000


def retention_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic → configs for the topics that hold raw patient ids (the raw topics and the dead
    letters): a bounded ``retention.ms``. Other topics keep the broker's default."""
    names = settings.topics
    raw = {"retention.ms": str(settings.raw_retention_hours * _HOUR_MS)}
    configs = {name: dict(raw) for name in names.raw.values()}
    configs[names.dead_letter] = {
        "retention.ms": str(settings.deadletter_retention_hours * _HOUR_MS)
    }
    return configs


def _refused(exc: BaseException) -> bool:
    """The broker's ACLs do not let this principal do it (a source's principal, which may only
    write its raw topic: the pipeline's principal creates and configures topics)."""
    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    code = exc.args[0].code() if isinstance(exc.args[0], KafkaError) else None
    return code in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
    )


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create missing topics; set the retention of existing raw and dead-letter topics.

    A principal that may not create or configure topics (a source's, under the compose stack's
    ACLs) skips that part: the worker's principal, or the ACL bootstrap, does it."""
    names = settings.topics
    retention = retention_configs(settings)
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
    # Under ACLs the metadata lists only the topics this principal may describe.
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(n, p, 1, config=retention.get(n, {}))
        for n, p in wanted.items()
        if n not in existing
    ]
    new += [
        NewTopic(n, p, 1, config={"cleanup.policy": "compact"})
        for n, p in changelogs.items()
        if n not in existing
    ]
    refused: list[str] = []
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=30).items():
            try:
                fut.result()
                logger.info("created topic %s", name)
            except Exception as exc:
                if _refused(exc):
                    refused.append(name)
                elif "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    if refused:
        logger.info(
            "not allowed to create %d topics (%s, …): the pipeline's principal creates them",
            len(refused),
            refused[0],
        )
    _align_retention(admin, {n: c for n, c in retention.items() if n in existing})


def _align_retention(admin: AdminClient, retention: dict[str, dict[str, str]]) -> None:
    """Existing topics get the configured retention (a topic made by an older version, or
    before the setting changed, kept its own)."""
    if not retention:
        return
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in sorted(retention)]
    stale: list[ConfigResource] = []
    for resource, fut in admin.describe_configs(resources).items():
        try:
            current = fut.result()
        except KafkaException as exc:
            if _refused(exc):
                continue
            raise
        want = retention[resource.name]
        changes = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in want.items()
            if key not in current or current[key].value != value
        ]
        if changes:
            stale.append(
                ConfigResource(ResourceType.TOPIC, resource.name, incremental_configs=changes)
            )
    if not stale:
        return
    for resource, fut in admin.incremental_alter_configs(stale).items():
        try:
            fut.result()
            changed = ", ".join(f"{e.name}={e.value}" for e in resource.incremental_configs)
            logger.info("set %s on topic %s", changed, resource.name)
        except KafkaException as exc:
            if not _refused(exc):
                raise
