"""Produce a JSON Lines recording to the raw topics as Avro.

Valid lines are encoded as Avro ``RawEvent``. Lines that fail validation are still sent, as their
original JSON bytes, so the worker dead-letters them with the reason: nothing is dropped here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Producer

from portal_pulse.broker import librdkafka_logger
from portal_pulse.errors import EXIT_UNREACHABLE, UserError
from portal_pulse.kafka_producer import IDEMPOTENT_PRODUCER
from portal_pulse.progress import STEP, ProgressFactory, count_lines
from portal_pulse.settings import Settings
from schemas.catalogue import source_of
from schemas.jsonl import LineError, iter_lines
from schemas.serializer import get_codec, raw_event_to_record

__all__ = ["ProduceSummary", "produce_file"]

logger = logging.getLogger(__name__)


@dataclass
class ProduceSummary:
    valid: int = 0
    invalid: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # first few, for the user


def _partition_key(practice_id: str, patient_id: str) -> bytes:
    """Keeps one patient's events in order within a raw topic without spelling out the id."""
    return hashlib.sha256(f"{practice_id}|{patient_id}".encode()).digest()[:16]


def produce_file(
    settings: Settings,
    bootstrap: str,
    path: Path,
    *,
    max_errors_shown: int = 10,
    progress: ProgressFactory | None = None,
) -> ProduceSummary:
    codec = get_codec("RawEvent", settings.schema_registry_url)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "compression.type": "lz4",
            **IDEMPOTENT_PRODUCER,
            **settings.kafka_client_config(),
            # librdkafka's own lines (transient retries) stay off the terminal; --debug shows them.
            "logger": librdkafka_logger(),
        }
    )
    topics = settings.topics.raw
    summary = ProduceSummary()

    refused: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            refused.append(str(err))

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        summary.by_topic[topic] += 1

    bar = progress("producing", count_lines(path)) if progress else None
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line_no, item in iter_lines(fh):
            if bar is not None and line_no % STEP == 0:
                bar.update(STEP)
            if isinstance(item, LineError):
                summary.invalid += 1
                if len(summary.errors) < max_errors_shown:
                    summary.errors.append(str(item))
                try:
                    event_type = json.loads(item.raw).get("event_type")
                except (ValueError, AttributeError, RecursionError):
                    event_type = None
                send(
                    topics[source_of(event_type if isinstance(event_type, str) else None)],
                    None,
                    item.raw.encode("utf-8", "surrogateescape"),
                )
                continue
            summary.valid += 1
            value = codec.encode_record(raw_event_to_record(item))
            send(
                topics[source_of(item.event_type)],
                _partition_key(item.practice_id, item.patient_id),
                value,
            )
    if bar is not None:
        bar.close()
    remaining = producer.flush(60)
    if remaining:
        raise UserError(
            f"{remaining} messages were not delivered to Kafka at {bootstrap} within 60 s",
            EXIT_UNREACHABLE,
        )
    if refused:
        raise UserError(
            f"Kafka at {bootstrap} refused {len(refused)} of the records ({refused[0]}); "
            "produce the file again: events already delivered are dropped as duplicates",
            EXIT_UNREACHABLE,
        )
    return summary
