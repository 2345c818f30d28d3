"""A real Kafka broker for local runs and tests, and how commands find one.

``resolve_bootstrap`` (``portal-pulse demo``, ``broker start --any``, benchmarks) may start one:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when set;
2. a broker started by testcontainers when a Docker engine answers;
3. a native single-node KRaft broker assembled from Maven Central and run with ``java`` on loopback.

``find_bootstrap`` (``produce``, ``worker``) never starts anything: ``--bootstrap-servers``, then
``KAFKA_BOOTSTRAP_SERVERS``, then the native broker's port if something answers there; otherwise
a ``UserError`` says how to start one. ``check_kafka`` then asks the broker for its metadata within
a bounded time, with librdkafka's own log lines silenced, and names the address if it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portal_pulse.errors import EXIT_UNREACHABLE, UserError
from portal_pulse.private_files import private_dir, write_private

__all__ = [
    "BrokerError",
    "LocalBroker",
    "check_kafka",
    "docker_available",
    "find_bootstrap",
    "librdkafka_logger",
    "resolve_bootstrap",
]

logger = logging.getLogger(__name__)

DATA = Path(__file__).with_name("data")
KAFKA_VERSION = "4.4.0"
# The broker's own principal (SASL/PLAIN): inter-broker and controller traffic, and the one
# super user when ACLs are on.
SUPER_USER = "admin"
# The broker runs, and its files are written, under this umask: its data holds raw events (patient
# ids) and server.properties holds passwords, so both are the user's alone (0700 / 0600).
BROKER_UMASK = 0o077


class BrokerError(RuntimeError):
    """The broker could not be assembled, started or reached."""


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        out = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


@dataclass
class LocalBroker:
    """A single-node KRaft broker under ``home`` (libs, config, data, log, pid)."""

    home: Path
    port: int = 19092
    controller_port: int = 19093
    heap: str = "512m"
    # username → password: clients must authenticate with SASL/PLAIN (without ``acls`` the
    # controller stays on a loopback-only plaintext listener).
    sasl_users: dict[str, str] | None = None
    # (PEM file with the encrypted private key and certificate chain, its password, CA PEM):
    # clients must connect with TLS.
    tls: tuple[Path, str, Path] | None = None
    # SASL with KRaft's StandardAuthorizer: nothing is allowed without an ACL, the broker's own
    # principal SUPER_USER (PLAIN, also on the controller listener) is the one super user, and
    # clients may also log in with SCRAM-SHA-512 users made through the admin API
    # (portal_pulse.kafka_acls makes them and their ACLs).
    acls: bool = False
    # SUPER_USER's password; random per broker object, written only to the 0600 server.properties.
    admin_password: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        """Jars are shared by every broker home on the machine: assembled once, reused."""
        cache = os.environ.get("PORTAL_PULSE_KAFKA_LIBS")
        if cache:
            return Path(cache)
        return Path.home() / ".cache" / "portal-pulse" / f"kafka-{KAFKA_VERSION}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def assemble(self) -> None:
        """Fetch kafka_2.13 and its runtime dependencies from Maven Central, once."""
        marker = self.libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
        if marker.exists():
            return
        if shutil.which("mvn") is None:
            raise BrokerError(
                "mvn is not installed; it is needed to assemble Kafka from Maven Central"
            )
        self.libs.mkdir(parents=True, exist_ok=True)
        logger.info("assembling Kafka %s from Maven Central into %s", KAFKA_VERSION, self.libs)
        cmd = [
            "mvn", "-q", "-B", "-f", str(DATA / "kafka-pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not marker.exists():
            raise BrokerError(f"mvn failed to assemble Kafka:\n{result.stdout}\n{result.stderr}")

    def _java(self, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={DATA / 'kafka-log4j2.properties'}",
            "-cp", f"{self.libs}/*", *args,
        ]  # fmt: skip

    @property
    def _sasl(self) -> bool:
        return bool(self.sasl_users) or self.acls

    @property
    def _client_listener(self) -> str:
        if self.tls:
            return "SASL_SSL" if self._sasl else "SSL"
        return "SASL_PLAINTEXT" if self._sasl else "PLAINTEXT"

    def _tls_lines(self) -> list[str]:
        if not self.tls:
            return []
        keystore, password, ca = self.tls
        return [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            f"ssl.key.password={password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca}",
        ]

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of the broker's own principal (the super user under ``acls``)."""
        conf: dict[str, str] = {"bootstrap.servers": self.bootstrap}
        conf["security.protocol"] = self._client_listener
        if self._sasl:
            conf.update(
                {
                    "sasl.mechanism": "PLAIN",
                    "sasl.username": SUPER_USER,
                    "sasl.password": self.admin_password,
                }
            )
        if self.tls:
            conf["ssl.ca.location"] = str(self.tls[2])
        return conf

    def client_config(self) -> dict[str, str]:
        """librdkafka settings a client needs for this broker's listener (the first of
        ``sasl_users``, else the broker's own principal)."""
        conf = self.admin_config()
        if self.sasl_users:
            user, password = next(iter(self.sasl_users.items()))
            conf.update({"sasl.username": user, "sasl.password": password})
        return conf

    def _sasl_lines(self) -> list[str]:
        if not self._sasl:
            return []
        pw = self.admin_password
        module = "org.apache.kafka.common.security.plain.PlainLoginModule required"
        admin = f'username="{SUPER_USER}" password="{pw}" user_{SUPER_USER}="{pw}"'
        users = "".join(f' user_{u}="{p}"' for u, p in (self.sasl_users or {}).items())
        listener = self._client_listener.lower()
        lines = [
            "sasl.enabled.mechanisms=PLAIN" + (",SCRAM-SHA-512" if self.acls else ""),
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            f"listener.name.{listener}.plain.sasl.jaas.config={module} {admin}{users};",
        ]
        if self.acls:
            lines += [
                f"listener.name.{listener}.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                # The controller listener too: the authorizer would refuse an anonymous broker.
                "sasl.mechanism.controller.protocol=PLAIN",
                "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                f"listener.name.controller.plain.sasl.jaas.config={module} {admin};",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{SUPER_USER}",
                "allow.everyone.if.no.acl.found=false",
            ]
        return lines

    def _write_config(self) -> Path:
        data = self.home / "data"
        cfg = self.home / "server.properties"
        controller = "SASL_PLAINTEXT" if self.acls else "PLAINTEXT"
        write_private(
            cfg,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners={self._client_listener}://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={self._client_listener}://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={self._client_listener}:"
                    f"{self._client_listener},CONTROLLER:{controller}",
                    f"inter.broker.listener.name={self._client_listener}",
                    *self._sasl_lines(),
                    *self._tls_lines(),
                    f"log.dirs={data}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # Under ACLs, as in the compose stack: every topic is made on purpose.
                    f"auto.create.topics.enable={'false' if self.acls else 'true'}",
                    "log.retention.hours=-1",
                    "log.segment.bytes=67108864",
                    "",
                ]
            ),
        )
        if not (data / "meta.properties").exists():
            data.mkdir(mode=0o700, exist_ok=True)
            cluster_id = uuid.uuid4().hex[:22]
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", _kraft_id(cluster_id), "-c", str(cfg)
                ),
                capture_output=True,
                text=True,
                check=False,
                umask=BROKER_UMASK,
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}"
                )
        return cfg

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def start(self, timeout: float = 90.0) -> str:
        """Start (or reuse) the broker and wait until it answers metadata requests."""
        if self.running_pid() and self.ready():
            return self.bootstrap
        if _port_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} is taken by another process")
        self.assemble()
        private_dir(self.home)
        cfg = self._write_config()
        log_fd = os.open(
            self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600
        )
        with os.fdopen(log_fd, "ab") as log:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(cfg)),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=BROKER_UMASK,
            )
        write_private(self.pid_file, str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"broker exited with {proc.returncode}; see {self.log_file}")
            if self.ready():
                logger.info("Kafka broker ready on %s (pid %d)", self.bootstrap, proc.pid)
                return self.bootstrap
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"broker did not answer within {timeout:.0f}s; see {self.log_file}")

    def ready(self) -> bool:
        if not _port_open("127.0.0.1", self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({**self.admin_config(), "logger": librdkafka_logger()}).list_topics(
                timeout=3
            )
        except Exception:
            return False
        return bool(md.brokers)

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _kraft_id(seed: str) -> str:
    """A KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Never starting with '-': ``kafka-storage format -t -x…`` takes such an id for an option
    and fails (one broker start in 64 did). Any other first character is still 16 bytes."""
    import base64

    text = base64.urlsafe_b64encode(
        uuid.UUID(hex=uuid.uuid5(uuid.NAMESPACE_URL, seed).hex).bytes
    ).decode()[:22]
    return "A" + text[1:] if text.startswith("-") else text


_container = None


def resolve_bootstrap(data_dir: Path, *, start: bool = True) -> str:
    """Bootstrap servers by the project's choice order; starts a broker if need be."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    global _container
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        if _container is None:
            _container = KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft()
            _container.start()
        return _container.get_bootstrap_server()
    broker = LocalBroker(
        Path(data_dir) / "kafka", port=int(os.environ.get("PORTAL_PULSE_BROKER_PORT", "19092"))
    )
    broker.controller_port = broker.port + 1
    if not start:
        return broker.bootstrap
    return broker.start()


def find_bootstrap(override: str | None, configured: str | None, broker_port: int) -> str:
    """Where ``produce`` and ``worker`` find Kafka; never starts a broker."""
    if override:
        return override
    if configured:
        return configured
    if _port_open("127.0.0.1", broker_port):
        return f"127.0.0.1:{broker_port}"
    raise UserError(
        f"no Kafka broker: KAFKA_BOOTSTRAP_SERVERS is not set and nothing answers on "
        f"127.0.0.1:{broker_port}\nstart one with 'portal-pulse broker start', or set "
        "KAFKA_BOOTSTRAP_SERVERS (or pass --bootstrap-servers HOST:PORT)",
        EXIT_UNREACHABLE,
    )


def librdkafka_logger() -> logging.Logger:
    """librdkafka's log lines go here: kept out of the terminal, visible with ``--debug``."""
    log = logging.getLogger("portal_pulse.librdkafka")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    log.propagate = bool(os.environ.get("PORTAL_PULSE_DEBUG"))
    return log


def check_kafka(bootstrap: str, client_config: dict[str, Any], timeout: float = 10.0) -> None:
    """Raise a one-line ``UserError`` unless the broker answers a metadata request in time."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[Any] = []
    admin = AdminClient(
        {
            **client_config,
            "bootstrap.servers": bootstrap,
            "logger": librdkafka_logger(),
            "error_cb": errors.append,
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        }
    )
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(1.0, left)))
        except KafkaException:
            metadata = None
        if metadata is not None and metadata.brokers:
            return
        admin.poll(0)
        codes = {e.name() for e in errors}
        fatal = codes & {"_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED"}
        # A refused connection will not change: give up after a few seconds, not the full time.
        refused = "_ALL_BROKERS_DOWN" in codes and time.monotonic() - started >= 3.0
        if fatal or refused or time.monotonic() >= deadline:
            break
    detail = next(
        (e.str() for e in reversed(errors) if e.name() != "_ALL_BROKERS_DOWN"),
        f"no answer within {timeout:.0f}s",
    )
    raise UserError(f"Kafka at {bootstrap} is not reachable: {_one_line(detail)}", EXIT_UNREACHABLE)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."
