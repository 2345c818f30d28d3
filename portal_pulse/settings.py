"""The one settings object, read from the environment (``PORTAL_PULSE_*`` plus a few standard names).

Practice rules (hours, SLA, follow-ups) live in the YAML file named by ``practices_file``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse, urlunparse

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "Topics", "mask_url"]

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
    # A file holding the SASL password (a Docker/Kubernetes secret); used when no password is set.
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_cafile: Path | None = None
    schema_registry_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SCHEMA_REGISTRY_URL", "PORTAL_PULSE_SCHEMA_REGISTRY_URL"),
    )
    topic_prefix: str = "portal"
    raw_partitions: int = 4
    clean_partitions: int = 4
    # Retention (retention.ms) of the raw topics, which hold raw patient ids: long enough to ride
    # out a week's outage and re-ingest after a fix, no longer (docs/operations.md#retention).
    raw_retention_hours: int = Field(default=168, ge=1)
    # Dead letters also hold raw ids, and wait for a person to read, fix and resend them.
    deadletter_retention_hours: int = Field(default=336, ge=1)
    app_id: str = "portal-pulse"
    # Failover: a dead worker's partitions move after this many seconds without a heartbeat.
    session_timeout_seconds: float = 10.0
    # Standby replicas (streams/warm_copies.py): 1 or more keeps a warm copy of every table
    # partition on each worker, so failover restores from a nearby position instead of the
    # changelog's start; 0 turns them off.
    standby_replicas: int = Field(default=1, ge=0)
    # Static group membership (Kafka group.instance.id): a worker restarted under the same id
    # gets its partitions back at once, without a rebalance. Unique per worker.
    group_instance_id: str | None = None
    # SIGTERM: the worker stops within this many seconds whatever it was waiting for.
    shutdown_timeout_seconds: float = 25.0

    # ClickHouse
    clickhouse_url: str | None = None  # default: chdb:///<data_dir>/chdb
    clickhouse_user: str | None = None
    clickhouse_password: SecretStr | None = None
    # A file holding the password (a Docker/Kubernetes secret); used when no password is set.
    clickhouse_password_file: Path | None = None
    clickhouse_verify_tls: bool = True

    # Local state
    data_dir: Path = Path("var")
    # Port of the native broker (``portal-pulse broker start``), used when no bootstrap is set.
    broker_port: int = 19092

    # PHI
    pseudonym_key: SecretStr | None = None
    pseudonym_key_file: Path | None = None

    # Practice rules
    practices_file: Path | None = None

    # Ingest
    dedup_capacity: int = 1_000_000
    max_future_skew_seconds: float = 300.0  # SPEC §7: a small skew ahead of the wall clock
    max_past_days: int = 3650

    # Sinks and the event-time clock
    sink_batch_size: int = 10_000
    # How long a batch waits for more input (processors and sinks): an alert waits in two of
    # them between its deadline and its row, so this bounds alert latency (docs/operations.md).
    sink_flush_seconds: float = 0.2
    # Fault injection for resilience tests: after this share of successful inserts, act as if
    # the acknowledgement was lost, so the batch is sent again (it must add no rows).
    sink_fault_rate: float = 0.0
    # An insert that fails is retried with back-off up to this pause, for as long as it takes.
    sink_retry_max_seconds: float = 10.0
    # The stored monthly rows (monthly_portal_performance, migration 0010) are refreshed at
    # most this often while rows are written, and always before the worker stops: how stale
    # BI tools and the dashboard may see the month while a worker runs (docs/metrics.md).
    monthly_refresh_seconds: float = Field(default=5.0, gt=0, le=3600)
    tick_interval_seconds: float = 0.25
    idle_grace_seconds: float = 0.5
    # Late and out-of-order events (SPEC §7.1, docs/time.md): a clock-driven alert waits this
    # long past its instant, so an event that arrives within it can still prevent the page;
    # an event up to the horizon behind the clock corrects what was emitted (withdraws, raises
    # late, rewrites response facts); an event further behind lands in `events` only.
    sla_alert_hold_seconds: float = Field(default=60.0, ge=0)
    followup_alert_hold_seconds: float = Field(default=3600.0, ge=0)
    correction_horizon_days: float = Field(default=30.0, gt=0, le=365)

    # Observability: the worker's HTTP endpoint (/healthz, /readyz, /metrics open; /status and
    # /reads/* with the bearer token). Port 0 picks a free port (written to the address file in
    # the worker's private directory beside an embedded database).
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # The bearer token of /status and /reads/* (at least 32 characters). Unset: the worker makes
    # one and keeps it in its private directory, where the commands of the same user read it.
    web_token: SecretStr | None = None
    web_token_file: Path | None = None
    # /readyz says "not ready" while any assigned partition is more messages behind than this.
    ready_max_lag: int = 1000
    # "text" (default) or "json": one JSON object per log line.
    log_format: Literal["text", "json"] = "text"

    # Alert delivery
    webhook_url: str | None = None
    # Overall deadline of one delivery attempt: connect, upload, status and response body.
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1)
    # Plain http:// beyond loopback: a warning at start, or with this on, a refusal to start.
    webhook_require_tls: bool = False
    # At most this much of a response body is read; past it the connection is dropped.
    webhook_max_response_bytes: int = Field(default=65_536, ge=0)
    # Alerts delivered at once: a receiver slow on one alert holds one sender, not the rest.
    webhook_concurrency: int = Field(default=4, ge=1, le=64)
    # Alertmanager (its v2 API: POST <url>/api/v2/alerts). Open alerts are sent again every
    # resend period (well inside Alertmanager's resolve_timeout, 5 m by default), at most
    # alertmanager_max_open of them (the newest). Timeout, attempts and senders: webhook_*.
    alertmanager_url: str | None = None
    alertmanager_resend_seconds: float = Field(default=60.0, gt=0, le=3600)
    alertmanager_max_open: int = Field(default=10_000, ge=1)
    # PagerDuty Events API v2: the integration's routing key (or a file holding it); the URL is
    # overridable for tests and PagerDuty's EU endpoint.
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_routing_key_file: Path | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    # A link put on Alertmanager and PagerDuty alerts (a dashboard, say); only {practice_id} and
    # {kind} may appear in it.
    alert_link_template: str | None = None

    @field_validator(
        "clickhouse_password_file",
        "kafka_sasl_password_file",
        "web_token_file",
        "pagerduty_routing_key_file",
    )
    @classmethod
    def _password_file_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{path} is not a readable file")
        return path

    @model_validator(mode="after")
    def _password_from_file(self) -> Settings:
        """``clickhouse_password`` from ``clickhouse_password_file`` (trailing newline dropped)."""
        if self.clickhouse_password is None and self.clickhouse_password_file is not None:
            text = Path(self.clickhouse_password_file).read_text().rstrip("\r\n")
            self.clickhouse_password = SecretStr(text)
        if self.kafka_sasl_password is None and self.kafka_sasl_password_file is not None:
            text = Path(self.kafka_sasl_password_file).read_text().rstrip("\r\n")
            self.kafka_sasl_password = SecretStr(text)
        if self.web_token is None and self.web_token_file is not None:
            self.web_token = SecretStr(Path(self.web_token_file).read_text().strip())
        if self.pagerduty_routing_key is None and self.pagerduty_routing_key_file is not None:
            text = Path(self.pagerduty_routing_key_file).read_text().strip()
            self.pagerduty_routing_key = SecretStr(text)
        return self

    @cached_property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def delivers_alerts(self) -> bool:
        """Whether any alert sink (webhook, Alertmanager, PagerDuty) is configured."""
        return bool(self.webhook_url or self.alertmanager_url or self.pagerduty_routing_key)

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
        """Settings for logs and ``portal-pulse config``: secrets masked.

        Secret fields print as ``**********``; URLs keep their scheme, host and port but lose
        passwords, and a webhook URL also loses its path and query (where tokens live).
        """
        data = self.model_dump(mode="json")
        for name in ("clickhouse_url", "schema_registry_url"):
            if data.get(name):
                data[name] = mask_url(data[name])
        if data.get("webhook_url"):
            data["webhook_url"] = mask_url(data["webhook_url"], keep_path=False)
        if data.get("alertmanager_url"):
            data["alertmanager_url"] = mask_url(data["alertmanager_url"])
        return data

    def effective(self) -> dict[str, Any]:
        """``safe_dump`` with the defaults a command would actually use filled in."""
        data = self.safe_dump()
        data["clickhouse_url"] = mask_url(self.clickhouse_dsn)
        data["data_dir"] = str(self.data_dir.resolve())
        if not self.kafka_bootstrap_servers:
            data["kafka_bootstrap_servers"] = (
                f"127.0.0.1:{self.broker_port} (the native broker: portal-pulse broker start)"
            )
        if not self.practices_file:
            data["practices_file"] = "(built-in defaults)"
        if not self.pseudonym_key and not self.pseudonym_key_file:
            data["pseudonym_key"] = "(not set: the worker and replay need one)"
        if not self.schema_registry_url:
            data["schema_registry_url"] = "(none: Avro single-object framing)"
        if not self.webhook_url:
            data["webhook_url"] = "(none: alerts are not posted)"
        if not self.alertmanager_url:
            data["alertmanager_url"] = "(none: alerts are not sent to Alertmanager)"
        if not self.pagerduty_routing_key:
            data["pagerduty_routing_key"] = "(none: alerts are not sent to PagerDuty)"
        return data


def mask_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with its password as ``***``; without ``keep_path``, path and query too."""
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        return "<unparseable URL, masked>"
    if not parsed.scheme or not parsed.netloc:
        return url if keep_path else "***"
    netloc = parsed.netloc
    if parsed.password is not None:
        host = parsed.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parsed.username or ''}:***@{host}" + (f":{port}" if port is not None else "")
    if keep_path:
        query = "***" if parsed.query else ""
        return urlunparse(parsed._replace(netloc=netloc, query=query))
    path = "/***" if parsed.path.strip("/") or parsed.query else parsed.path
    return urlunparse((parsed.scheme, netloc, path, "", "", ""))
