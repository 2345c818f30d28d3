"""Raw topics written by a transactional producer: committed events in, aborted ones out, no stall.

A source may write its events in Kafka transactions. Then the raw partitions hold commit and
abort markers, each taking an offset that no consumer ever sees, and the records of aborted
transactions, which a ``read_committed`` consumer skips. The worker must process every committed
event once, none of the aborted ones, and still go idle (issue #18: offsets of a partition are
not consecutive). The fault suite's recording is split into three committed transactions with
two aborted ones between them; the tables must equal the offline replay of the committed events
alone, and the group must have committed everything it reads.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.settings import Settings
from schemas.catalogue import source_of
from schemas.jsonl import LineError, iter_lines
from schemas.serializer import get_codec, raw_event_to_record
from tests.integration import test_fault_injection as faults
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

Record = tuple[str, bytes | None, bytes]  # topic, key, value


def _encoded(lines: list[str], settings: Settings) -> list[Record]:
    """The lines as `portal-pulse produce` writes them: valid events as Avro RawEvent keyed by
    practice and patient, invalid lines as their own bytes (the worker dead-letters them)."""
    codec = get_codec("RawEvent", settings.schema_registry_url)
    topics = settings.topics.raw
    records: list[Record] = []
    for _, item in iter_lines(io.StringIO("".join(f"{line}\n" for line in lines))):
        if isinstance(item, LineError):
            try:
                event_type = json.loads(item.raw).get("event_type")
            except (ValueError, AttributeError, RecursionError):
                event_type = None
            topic = topics[source_of(event_type if isinstance(event_type, str) else None)]
            records.append((topic, None, item.raw.encode("utf-8", "surrogateescape")))
            continue
        key = hashlib.sha256(f"{item.practice_id}|{item.patient_id}".encode()).digest()[:16]
        records.append(
            (
                topics[source_of(item.event_type)],
                key,
                codec.encode_record(raw_event_to_record(item)),
            )
        )
    return records


def _aborted_copies(lines: list[str]) -> list[str]:
    """The lines again under new event ids: processed, each would be an event (or a dead letter)
    the replay of the committed events does not have."""
    copies = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            copies.append(line)
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
            obj["event_id"] = f"aborted-{obj['event_id']}"
        copies.append(json.dumps(obj))
    return copies


def _write_transactions(
    bootstrap: str, transactional_id: str, transactions: list[tuple[bool, list[Record]]]
) -> int:
    """Each batch in a transaction of its own, committed or aborted; returns the records
    delivered. An aborted batch is flushed first, so its records are in the log (and take
    offsets there) before the abort marker follows them."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    delivered = 0
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors.append(str(err))

    producer.init_transactions(60)
    for commit, records in transactions:
        producer.begin_transaction()
        for topic, key, value in records:
            while True:
                try:
                    producer.produce(topic, key=key, value=value, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(60) == 0, "every record of the transaction delivered"
        if commit:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
    assert not errors, errors[:5]
    return delivered


def _offsets_taken(bootstrap: str, topics: list[str]) -> int:
    """Offsets the topics' partitions have used: records plus control markers."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tx-watermarks"})
    try:
        total = 0
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += hi - lo
        return total
    finally:
        consumer.close()


def test_committed_events_only_and_no_stall(
    pipeline: Pipeline, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The fault suite's stream; the replay (what the worker must write) reads it whole: the
    # committed transactions carry all of it, in order.
    recording = faults.Recording(tmp_path / "events.jsonl", tmp_path / "practices.yaml")
    faults._write_recording(recording.events, recording.practices)
    lines = recording.events.read_text().splitlines()
    third = len(lines) // 3
    committed = [lines[:third], lines[third : 2 * third], lines[2 * third :]]  # sentinel last
    aborted = [_aborted_copies(lines[third : third + 300]), _aborted_copies(lines[-301:-1])]
    baseline = faults.replay_baseline(recording, kafka_bootstrap, tmp_path / "replay")

    settings = Settings(topic_prefix=pipeline.prefix, app_id=pipeline.env["PORTAL_PULSE_APP_ID"])
    ensure_topics(settings, kafka_bootstrap)
    batches = [
        (True, _encoded(committed[0], settings)),
        (False, _encoded(aborted[0], settings)),
        (True, _encoded(committed[1], settings)),
        (False, _encoded(aborted[1], settings)),
        (True, _encoded(committed[2], settings)),
    ]
    records = sum(len(b) for _, b in batches)
    delivered = _write_transactions(kafka_bootstrap, f"{pipeline.prefix}-source", batches)
    assert delivered == records, "the aborted records are in the log too"
    taken = _offsets_taken(kafka_bootstrap, list(settings.topics.raw.values()))
    print(
        f"\n[transactional] {sum(len(b) for c, b in batches if c)} committed and "
        f"{sum(len(b) for c, b in batches if not c)} aborted records; "
        f"{taken - records} offsets taken by transaction markers"
    )
    assert taken >= records + len(batches), "each transaction left a marker in the raw topics"

    # The overall timeout of the idle exit is a liveness bound only (the worker is stuck).
    result = faults._recover(pipeline, recording, "transactional", timeout=300)
    leaked = pipeline.query("SELECT count() FROM events WHERE startsWith(event_id, 'aborted-')")
    assert leaked == [[0]], (
        f"events of aborted transactions were processed:\n{result.stderr[-3000:]}"
    )
    faults.assert_matches_replay(pipeline, baseline, label="transactional", context=result.stderr)
