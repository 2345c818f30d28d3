"""What the agents receive: librdkafka's own messages, and the topic-partition they name.

The loop (``streams.consumer_loop``) hands each agent ``confluent_kafka.Message`` objects as
``consume`` returned them: no copy, no wrapper, one decode by the agent that reads the value.
"""

from __future__ import annotations

from typing import NamedTuple

from confluent_kafka import Message

__all__ = ["TP", "Message", "tp_of"]


class TP(NamedTuple):
    topic: str
    partition: int


def tp_of(message: Message) -> TP:
    return TP(message.topic(), message.partition())  # type: ignore[arg-type]
