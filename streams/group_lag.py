"""The consumer group's committed offsets against the log ends, read from outside the group.

``--exit-when-idle`` asks it whether a role's group has committed everything it reads; the
ingest asks it whether the raw partitions *other* workers hold are fully ingested before it
says the whole pipeline is caught up (streams/watermark.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from portal_pulse.settings import Settings

__all__ = ["GroupLag"]


class GroupLag:
    """The consumer group's committed offsets against the log ends, for every partition read."""

    def __init__(
        self, settings: Settings, bootstrap: str, topics: Iterable[str], group: str | None = None
    ) -> None:
        from confluent_kafka import Consumer

        # Never subscribes: it only reads the group's committed offsets and the log ends.
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group or settings.app_id,
                "enable.auto.commit": False,
                **settings.kafka_client_config(),
            }
        )
        self.topics = sorted(set(topics))

    def behind(self, timeout: float = 5.0) -> dict[tuple[str, int], int]:
        """Messages not yet committed, per topic-partition with any (all, when caught up: {})."""
        from confluent_kafka import TopicPartition

        meta = self._consumer.list_topics(timeout=timeout)
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in meta.topics
            for p in meta.topics[topic].partitions
        ]
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(tps, timeout)
        }
        lag: dict[tuple[str, int], int] = {}
        for tp in tps:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout)
            done = committed.get((tp.topic, tp.partition), -1)
            start = done if done >= 0 else low
            if high > start:
                lag[(tp.topic, tp.partition)] = high - start
        return lag

    def close(self) -> None:
        self._consumer.close()
