"""A librdkafka producer for the hot output topics, flushed before the inputs are acknowledged.

Faust's own producer (aiokafka, pure Python) costs more per message than the rest of ingest put
together; confluent-kafka's runs in C on its own thread. At-least-once is kept by acknowledging a
batch of input records only after every output of the batch is confirmed delivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Producer

from portal_pulse.settings import Settings

__all__ = ["DeliveringProducer", "DeliveryError"]

logger = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """Some outputs of a batch were not delivered; its inputs must not be acknowledged."""


class DeliveringProducer:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # keeps per-key order through retries
                "linger.ms": 10,
                "compression.type": "lz4",
                # Same key → same partition as Java clients and aiokafka.
                "partitioner": "murmur2_random",
                **settings.kafka_client_config(),
            }
        )
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = list(headers.items())
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def send_tombstone(self, topic: str, key: bytes, partition: int) -> None:
        """A null value: deletes the key from a compacted (changelog) topic."""
        while True:
            try:
                self._producer.produce(
                    topic, key=key, value=None, partition=partition, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait (off the event loop) until everything sent so far is delivered."""
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self._producer.flush, timeout
        )
        errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeliveryError(f"{remaining} undelivered, errors: {errors[:3]}")
