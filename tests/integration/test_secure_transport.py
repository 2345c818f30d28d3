"""Authenticated and encrypted Kafka: the same pipeline against brokers that require SASL or TLS."""

from __future__ import annotations

import json
import shutil
import subprocess
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


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A broker whose clients must use TLS (self-signed certificate for 127.0.0.1)."""
    home = tmp_path_factory.mktemp("kafka-tls")
    plain_key, key, cert = home / "plain-key.pem", home / "key.pem", home / "cert.pem"
    password = "broker-key-pass"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(plain_key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    # Kafka's PEM keystore wants an encrypted PKCS#8 key in a scheme Java can read.
    subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-in", str(plain_key),
         "-out", str(key), "-passout", f"pass:{password}"],
        check=True, capture_output=True,
    )  # fmt: skip
    keystore = home / "keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    broker = LocalBroker(
        home, port=free_port(), controller_port=free_port(), tls=(keystore, password, cert)
    )
    bootstrap = broker.start(timeout=120)
    try:
        yield bootstrap, cert
    finally:
        broker.stop()


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed to make a test certificate"
)
def test_pipeline_runs_over_tls(tls_broker: tuple[str, Path], tmp_path: Path) -> None:
    bootstrap, ca = tls_broker
    pipeline = Pipeline(bootstrap, tmp_path)
    env = {"PORTAL_PULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "PORTAL_PULSE_KAFKA_SSL_CAFILE": str(ca)}
    events = [
        {"event_id": f"t{i}", "event_type": "record.viewed", "occurred_at": f"2026-01-05T1{i}:00:00Z",
         "practice_id": "PT", "patient_id": f"MRN-TLS-{i}"}
        for i in range(4)
    ]  # fmt: skip
    recording = tmp_path / "events.jsonl"
    recording.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    # A plaintext client cannot talk to it.
    plain = pipeline.cli("produce", str(recording), timeout=120)
    assert plain.returncode != 0
    produced = pipeline.cli("produce", str(recording), env=env)
    assert produced.returncode == 0, produced.stderr[-2000:]
    pipeline.run_worker(env=env)
    assert pipeline.query("SELECT count() FROM events") == [[4]]
