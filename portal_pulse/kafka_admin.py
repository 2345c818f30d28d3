"""Creates the pipeline's topics with their partition counts before anything produces to them."""

from __future__ import annotations

import logging

from confluent_kafka.admin import AdminClient, NewTopic

from portal_pulse.settings import Settings

__all__ = ["ensure_topics"]

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    names = settings.topics
    wanted = {name: settings.raw_partitions for name in names.raw.values()}
    wanted[names.dead_letter] = settings.raw_partitions
    for name in (names.clean, names.alerts, names.responses, names.live_metrics):
        wanted[name] = settings.clean_partitions
    admin = AdminClient({"bootstrap.servers": bootstrap, **settings.kafka_client_config()})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(n, p, 1) for n, p in wanted.items() if n not in existing]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=30).items():
        try:
            fut.result()
            logger.info("created topic %s", name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
