"""What the agents receive: librdkafka's own messages, and the topic-partition they name.

The loop (``streams.consumer_loop``) hands each agent ``confluent_kafka.Message`` objects as
``consume`` returned them: no copy, no wrapper, one decode by the agent that reads the value.
"""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka import Message

__all__ = ["TP", "Message", "tp_for", "tp_of"]


class TP(NamedTuple):
    topic: str
    partition: int


_KNOWN: dict[tuple[str, int], TP] = {}


def tp_for(topic: str, partition: int) -> TP:
    """``TP(topic, partition)``, one object per partition: building a named tuple per record
    cost about 2 % of a worker (several per event)."""
    known = _KNOWN.get((topic, partition))
    if known is None:
        known = _KNOWN[(topic, partition)] = TP(topic, partition)
    return known


def tp_of(message: Message) -> TP:
    return tp_for(message.topic(), message.partition())  # type: ignore[arg-type]
