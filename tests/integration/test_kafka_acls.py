"""Kafka ACLs on a native KRaft broker with SASL and the StandardAuthorizer: the same rules as the
compose stack (portal_pulse.kafka_acls), applied the same way, and what they refuse."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from portal_pulse.broker import SUPER_USER, LocalBroker
from portal_pulse.kafka_acls import PIPELINE, PRINCIPALS, SCRAM_MECHANISM, apply
from portal_pulse.kafka_admin import ensure_topics
from portal_pulse.settings import Settings
from tests.integration.conftest import Pipeline, free_port

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


@dataclass
class Deployment:
    broker: LocalBroker
    prefix: str
    app_id: str
    passwords: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        """The settings a worker or producer of this principal runs with."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "PORTAL_PULSE_TOPIC_PREFIX": self.prefix,
            "PORTAL_PULSE_APP_ID": self.app_id,
            "PORTAL_PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "PORTAL_PULSE_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "PORTAL_PULSE_KAFKA_SASL_USERNAME": user,
            "PORTAL_PULSE_KAFKA_SASL_PASSWORD": self.passwords[user],
        }

    def settings(self, user: str = SUPER_USER) -> Settings:
        if user == SUPER_USER:
            return Settings(
                kafka_bootstrap_servers=self.broker.bootstrap,
                topic_prefix=self.prefix,
                app_id=self.app_id,
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username=SUPER_USER,
                kafka_sasl_password=self.broker.admin_password,
            )
        return Settings(
            **{k.lower().removeprefix("portal_pulse_"): v for k, v in self.env(user).items()}
        )

    def producer(self, user: str) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.broker.bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.username": user,
                "sasl.password": self.passwords[user],
                "message.timeout.ms": 30_000,
            }
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    broker = LocalBroker(
        tmp_path_factory.mktemp("kafka-acls"),
        port=free_port(),
        controller_port=free_port(),
        acls=True,
    )
    broker.start(timeout=120)
    try:
        run = uuid.uuid4().hex[:8]
        found = Deployment(
            broker, f"acl{run}", f"acl-{run}", {u: uuid.uuid4().hex for u in PRINCIPALS}
        )
        apply(found.settings(), broker.bootstrap, found.passwords)
        yield found
    finally:
        broker.stop()


def _send(producer: Producer, topic: str) -> KafkaError | None:
    """Produce one record and wait for its fate: None when the broker took it."""
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"forged", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(60)
    assert outcome, f"no delivery report for {topic}"
    return outcome[0]


def test_a_source_writes_its_raw_topic_and_nothing_else(deployment: Deployment) -> None:
    topics = deployment.settings().topics
    portal = deployment.producer("portal")
    assert _send(portal, topics.raw["portal"]) is None
    for topic in (
        topics.clean,
        topics.alerts,
        topics.responses,
        topics.dead_letter,
        topics.raw["ehr"],
        f"{deployment.app_id}-clocks-changelog",
    ):
        err = _send(deployment.producer("portal"), topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
            topic,
            err,
        )
    # Nor may the pipeline forge a source's event.
    err = _send(deployment.producer(PIPELINE), topics.raw["portal"])
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_pipeline_principal_runs_a_worker_end_to_end(
    deployment: Deployment, tmp_path: Path
) -> None:
    pipeline = Pipeline(deployment.broker.bootstrap, tmp_path)
    events = [
        {"event_id": f"a{i}", "event_type": "portal.login", "occurred_at": f"2026-01-05T1{i}:00:00Z",
         "practice_id": "PA", "patient_id": f"MRN-ACL-{i}", "channel": "web"}
        for i in range(5)
    ]  # fmt: skip
    recording = tmp_path / "portal.jsonl"
    recording.write_text("".join(json.dumps(e) + "\n" for e in events))
    # The portal's own login produces its events with the CLI (the topics exist already).
    produced = pipeline.cli("produce", str(recording), env=deployment.env("portal"))
    assert produced.returncode == 0, produced.stderr[-2000:]
    # An EHR event under the portal's login is refused, and the CLI says so.
    ehr = tmp_path / "ehr.jsonl"
    ehr.write_text(
        json.dumps(
            {"event_id": "e1", "event_type": "result.posted", "occurred_at": "2026-01-05T10:00:00Z",
             "practice_id": "PA", "patient_id": "MRN-ACL-0", "result_id": "r1"}
        ) + "\n"
    )  # fmt: skip
    refused = pipeline.cli("produce", str(ehr), env=deployment.env("portal"))
    assert refused.returncode != 0
    assert "authorization" in refused.stderr.lower(), refused.stderr[-2000:]

    pipeline.run_worker(env=deployment.env(PIPELINE))
    assert pipeline.query("SELECT count() FROM events") == [[5]]


def _retention(admin: AdminClient, topic: str) -> tuple[str, bool]:
    (fut,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    entry = fut.result()["retention.ms"]
    return entry.value, entry.is_default


def test_raw_and_dead_letter_topics_carry_the_retention_settings(deployment: Deployment) -> None:
    admin = AdminClient(deployment.broker.admin_config())
    topics = deployment.settings().topics
    for topic in topics.raw.values():
        assert _retention(admin, topic) == (str(168 * HOUR_MS), False), topic
    assert _retention(admin, topics.dead_letter) == (str(336 * HOUR_MS), False)
    assert _retention(admin, topics.clean)[1], "other topics keep the broker's default"

    # A raw topic whose retention was changed by hand gets the setting back at the next start
    # of a worker (its principal may configure the pipeline's topics).
    raw = topics.raw["survey"]
    change = ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, raw, incremental_configs=[change])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result()
    assert _retention(admin, raw)[0] == "1000"
    ensure_topics(deployment.settings(PIPELINE), deployment.broker.bootstrap)
    assert _retention(admin, raw) == (str(168 * HOUR_MS), False)


def test_the_broker_keeps_its_files_to_its_user(deployment: Deployment) -> None:
    home = deployment.broker.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "server.properties").stat().st_mode) == 0o600
    data = home / "data"
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_applying_again_removes_an_acl_the_rules_do_not_define(deployment: Deployment) -> None:
    """A grant added by hand (or left by an older prefix) does not survive the next apply."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
    )

    admin = AdminClient(deployment.broker.admin_config())
    clean = deployment.settings().topics.clean
    grant = AclBinding(
        ResourceType.TOPIC, clean, ResourcePatternType.LITERAL, "User:portal", "*",
        AclOperation.WRITE, AclPermissionType.ALLOW,
    )  # fmt: skip
    for fut in admin.create_acls([grant]).values():
        fut.result()
    assert _send(deployment.producer("portal"), clean) is None
    apply(deployment.settings(), deployment.broker.bootstrap, deployment.passwords)
    err = _send(deployment.producer("portal"), clean)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
