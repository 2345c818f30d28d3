"""Authenticated Kafka: the same pipeline against a broker that requires SASL/PLAIN."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal_pulse.broker import LocalBroker
from tests.integration.conftest import Pipeline, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "pulse", "pulse-secret"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(
        tmp_path_factory.mktemp("kafka-sasl"),
        port=free_port(),
        controller_port=free_port(),
        sasl_users={USER: PASSWORD},
    )
    bootstrap = broker.start(timeout=120)
    try:
        yield bootstrap
    finally:
        broker.stop()


def _sasl_env(password: str) -> dict[str, str]:
    return {
        "PORTAL_PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PORTAL_PULSE_KAFKA_SASL_MECHANISM": "PLAIN",
        "PORTAL_PULSE_KAFKA_SASL_USERNAME": USER,
        "PORTAL_PULSE_KAFKA_SASL_PASSWORD": password,
    }


def test_pipeline_runs_over_sasl_and_refuses_a_wrong_password(
    sasl_broker: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(sasl_broker, tmp_path)
    events = [
        {"event_id": f"s{i}", "event_type": "portal.login", "occurred_at": f"2026-01-05T1{i}:00:00Z",
         "practice_id": "PS", "patient_id": f"MRN-SASL-{i}", "channel": "web"}
        for i in range(5)
    ]  # fmt: skip
    recording = tmp_path / "events.jsonl"
    recording.write_text("\n".join(json.dumps(e) for e in events) + "\n")

    refused = pipeline.cli("produce", str(recording), env=_sasl_env("wrong"), timeout=120)
    assert refused.returncode != 0

    produced = pipeline.cli("produce", str(recording), env=_sasl_env(PASSWORD))
    assert produced.returncode == 0, produced.stderr[-2000:]
    pipeline.run_worker(env=_sasl_env(PASSWORD))
    assert pipeline.query("SELECT count() FROM events") == [[5]]
