"""Produce valid, invalid and duplicate events through the real broker and worker into chDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from portal_pulse.simulate import SimulationSpec, simulate
from schemas.validation import InvalidEvent, validate_event
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def _write_recording(path: Path) -> tuple[set[str], dict[str, int], set[str]]:
    """A small simulated stream with bad events and duplicates; returns what the pipeline must keep."""
    spec = SimulationSpec(practices=2, patients=40, months=1, seed=11, bad_fraction=0.03)
    lines = [json.dumps(obj) for obj in simulate(spec)]
    # Exact duplicates of a few lines, and two lines no parser can read.
    lines += lines[:25:5]
    lines += ["{not json", "\x00\x01garbage"]
    valid_ids: set[str] = set()
    reasons: dict[str, int] = {"invalid_json": 1, "undecodable": 1}
    patient_ids: set[str] = set()
    for line in lines[:-2]:
        try:
            event = validate_event(json.loads(line))
        except InvalidEvent as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            continue
        valid_ids.add(event.event_id)
        patient_ids.add(event.patient_id)
    path.write_text("\n".join(lines) + "\n")
    return valid_ids, reasons, patient_ids


def _assert_landed(
    pipeline: Pipeline, valid_ids: set[str], reasons: dict[str, int], patient_ids: set[str]
) -> None:
    count, distinct = pipeline.query("SELECT count(), uniqExact(event_id) FROM events")[0]
    assert distinct == len(valid_ids)
    assert count == len(valid_ids), "every valid event exactly once, without FINAL"
    landed = {row[0] for row in pipeline.query("SELECT event_id FROM events")}
    assert landed == valid_ids
    got = dict(pipeline.query("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason"))
    assert got == reasons
    # No raw patient identifier anywhere in ClickHouse: dump every table as text and look.
    tables = [
        r[0]
        for r in pipeline.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    ]
    dump = "\n".join(
        json.dumps(pipeline.query(f"SELECT * FROM {t}"), default=str)
        for t in tables
        if t != "schema_migrations"
    )
    leaked = [pid for pid in patient_ids if pid in dump]
    assert not leaked, f"raw patient ids in ClickHouse: {leaked[:3]}"


def test_valid_invalid_and_duplicate_events_land_once(pipeline: Pipeline, tmp_path: Path) -> None:
    recording = tmp_path / "events.jsonl"
    valid_ids, reasons, patient_ids = _write_recording(recording)
    produced = pipeline.cli("produce", str(recording))
    assert produced.returncode == 0, produced.stderr
    pipeline.run_worker()
    _assert_landed(pipeline, valid_ids, reasons, patient_ids)

    # Dead letters keep the original bytes, with the reason, on the dead-letter topic.
    consumer = Consumer(
        {
            "bootstrap.servers": pipeline.env["KAFKA_BOOTSTRAP_SERVERS"],
            "group.id": "it-dlq-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([f"{pipeline.prefix}.events.deadletter"])
    from schemas.serializer import get_codec

    codec = get_codec("DeadLetter")
    records = []
    for _ in range(60):
        msg = consumer.poll(1.0)
        if msg is None:
            if len(records) >= sum(reasons.values()):
                break
            continue
        records.append(codec.decode_record(msg.value()))
    consumer.close()
    assert len(records) == sum(reasons.values())
    assert all(r["raw"] and r["reason"] and r["detail"] for r in records)
    assert any(r["raw"] == b"{not json" for r in records)


def test_forced_sink_retries_add_no_rows(pipeline: Pipeline, tmp_path: Path) -> None:
    recording = tmp_path / "events.jsonl"
    valid_ids, reasons, patient_ids = _write_recording(recording)
    assert pipeline.cli("produce", str(recording)).returncode == 0
    # Half the inserts "lose" their acknowledgement and are sent again with the same token.
    result = pipeline.run_worker(env={"PORTAL_PULSE_SINK_FAULT_RATE": "0.5"})
    assert "fault injection" in result.stderr
    _assert_landed(pipeline, valid_ids, reasons, patient_ids)


def test_worker_refuses_to_start_without_a_pseudonym_key(pipeline: Pipeline) -> None:
    env = dict(pipeline.env)
    env.pop("PORTAL_PULSE_PSEUDONYM_KEY")
    pipeline.env = env
    result = pipeline.cli("worker", "--exit-when-idle", "1", timeout=60)
    assert result.returncode == 2
    assert "PORTAL_PULSE_PSEUDONYM_KEY" in result.stderr
