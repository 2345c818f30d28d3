"""A librdkafka producer for the output and changelog topics, flushed before inputs are acknowledged.

Faust's own producer (aiokafka, pure Python) costs more per message than the rest of ingest put
together; confluent-kafka's runs in C on its own thread.

Failure policy (docs/delivery-guarantees.md): a message is never given up on. librdkafka retries
a record without a time limit (``message.timeout.ms=0``), so a broker outage of any length only
delays the flush, and the inputs of the batch stay unacknowledged until it ends. Only a
permanent refusal (a record too large, no authorization) is an error: the worker then exits
non-zero, because retrying cannot help and skipping would lose data.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from portal_pulse.kafka_producer import IDEMPOTENT_PRODUCER
from portal_pulse.settings import Settings

__all__ = ["DeliveringProducer", "DeliveryError"]

logger = logging.getLogger(__name__)


POLL_EVERY = 1000
"""Records produced between two ``poll(0)`` calls (``flush`` serves everything anyway)."""
_ANY_PARTITION = -1  # librdkafka's "unassigned": the key's partitioner chooses


class DeliveryError(RuntimeError):
    """The broker refused some outputs for good; their inputs must never be acknowledged."""


class DeliveringProducer:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                **IDEMPOTENT_PRODUCER,  # no duplicates, no reordering, no lost first batch
                "linger.ms": 10,
                "compression.type": "lz4",
                # Never expire a queued record: an outage delays delivery, it does not drop it.
                "message.timeout.ms": 0,
                # Same key → same partition as Java clients and aiokafka.
                "partitioner": "murmur2_random",
                "error_cb": self._on_error,
                # librdkafka's own log lines go through logging (our format, escaped), not stderr.
                "logger": logging.getLogger("librdkafka"),
                # Reports only for failed records: a Python callback per delivered record cost
                # more than producing it. A failure still reaches ``_on_delivery``.
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,
                **settings.kafka_client_config(),
            }
        )
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._last_error_log = 0.0
        self.sent = 0

    def _on_error(self, err: KafkaError) -> None:
        # Connection trouble: librdkafka keeps retrying; say so, at most every 10 s.
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:
            self._last_error_log = now
            logger.warning("Kafka producer: %s (retrying)", err.str())

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{err.name()}: {err.str()}"[:200])

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition, headers=headers)
                break
            except BufferError:  # the local queue is full: let librdkafka drain it
                self._producer.poll(0.05)
        self.sent += 1
        if not self.sent % POLL_EVERY:
            self._producer.poll(0)  # serve error reports and callbacks now and then

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: dict[str, bytes] | None = None,
        partition: int | None = None,
    ) -> None:
        self._produce(
            topic,
            value,
            key,
            _ANY_PARTITION if partition is None else partition,
            list(headers.items()) if headers else None,
        )

    def send_tombstone(self, topic: str, key: bytes, partition: int) -> None:
        """A null value: deletes the key from a compacted (changelog) topic."""
        self._produce(topic, None, key, partition, None)

    def stop(self) -> None:
        """Make a flush in progress give up (at shutdown): its inputs stay unacknowledged."""
        self._stop.set()

    def close(self) -> None:
        """Drop what is queued and the connections (a runtime never run, or after shutdown)."""
        self._producer.purge()
        self._producer.flush(0)

    def _flush_until_done(self) -> int:
        waited = 0.0
        while True:
            remaining = self._producer.flush(1.0)
            if remaining == 0 or self._stop.is_set():
                return remaining
            waited += 1.0
            if waited % 30 == 0:
                logger.warning(
                    "Kafka delivery: %d records waiting for the broker for %.0fs", remaining, waited
                )

    async def flush(self) -> None:
        """Wait (off the event loop) until everything sent so far is delivered.

        Raises DeliveryError for a permanent refusal, CancelledError when stopped; never
        returns with anything undelivered.
        """
        remaining = await asyncio.get_running_loop().run_in_executor(None, self._flush_until_done)
        errors, self._errors = self._errors, []
        if errors:
            raise DeliveryError(f"the broker refused {len(errors)} records: {errors[:3]}")
        if remaining:
            raise asyncio.CancelledError("stopping with records undelivered")
