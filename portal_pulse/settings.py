"""The one settings object, read from the environment (``PORTAL_PULSE_*`` plus a few standard names).

Practice rules (hours, SLA, follow-ups) live in the YAML file named by ``practices_file``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "Topics"]

SOURCES = ("ehr", "portal", "billing", "phone", "survey")


class Topics:
    """Topic names derived from the prefix, so a deployment can namespace them in one setting."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.raw = {src: f"{prefix}.raw.{src}" for src in SOURCES}
        self.clean = f"{prefix}.events.clean"
        self.dead_letter = f"{prefix}.events.deadletter"
        self.alerts = f"{prefix}.alerts"
        self.responses = f"{prefix}.facts.responses"
        self.live_metrics = f"{prefix}.metrics.live"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTAL_PULSE_", extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "PORTAL_PULSE_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "PORTAL_PULSE_SCHEMA_REGISTRY_URL"),
    )
    topic_prefix: str = "portal"
    raw_partitions: int = 4
    clean_partitions: int = 4
    app_id: str = "portal-pulse"
    # Failover: a dead worker's partitions move after this many seconds without a heartbeat.
    session_timeout_seconds: float = 10.0
    # Static group membership (Kafka group.instance.id): a worker restarted under the same id
    # gets its partitions back at once, without a rebalance. Unique per worker.
    group_instance_id: str | None = None
    # SIGTERM: the worker stops within this many seconds whatever it was waiting for.
    shutdown_timeout_seconds: float = 25.0

    # ClickHouse
    clickhouse_url: str | None = None  # default: chdb:///<data_dir>/chdb
    clickhouse_user: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_verify_tls: bool = True

    # Local state
    data_dir: Path = Path("var")

    # PHI
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None

    # Practice rules
    practices_file: Path | None = None

    # Ingest
    dedup_capacity: int = 1_000_000
    max_future_skew_seconds: float = 86_400.0
    max_past_days: int = 3650

    # Sinks and the event-time clock
    sink_batch_size: int = 10_000
    sink_flush_seconds: float = 0.5
    # Fault injection for resilience tests: after this share of successful inserts, act as if
    # the acknowledgement was lost, so the batch is sent again (it must add no rows).
    sink_fault_rate: float = 0.0
    # An insert that fails is retried with back-off up to this pause, for as long as it takes.
    sink_retry_max_seconds: float = 10.0
    tick_interval_seconds: float = 0.25
    idle_grace_seconds: float = 0.5

    # Alert delivery
    webhook_url: str | None = None
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 5

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) connection settings."""
        conf: dict[str, Any] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username or ""
            conf["sasl.password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        if self.kafka_ssl_cafile:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return conf

    def safe_dump(self) -> dict[str, Any]:
        """Settings for logs and ``config show``: secrets masked."""
        return self.model_dump(mode="json")
