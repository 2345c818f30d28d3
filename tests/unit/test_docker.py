"""What can be checked of docker/ without a Docker engine: the files agree with the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from portal_pulse.broker import KAFKA_VERSION
from portal_pulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PROVISIONING = DOCKER / "grafana" / "provisioning"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
SERVICES = {
    "kafka", "kafka-setup", "clickhouse", "migrate", "worker", "process", "sink", "prometheus",
    "grafana", "alertmanager",
}  # fmt: skip
# The Portal Pulse worker's services: `worker` (role all, the default) and, in profile `roles`, the
# scale-out form's `process` and `sink`.
WORKERS = ("worker", "process", "sink")
CLICKHOUSE_WRITERS = ("worker", "sink")
ROLES_PROFILE = "roles"
# What every worker service reads the same (one YAML anchor in compose.yaml).
COMMON_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "PORTAL_PULSE_PRACTICES_FILE",
    "PORTAL_PULSE_DATA_DIR",
    "PORTAL_PULSE_PSEUDONYM_KEY_FILE",
    "PORTAL_PULSE_WEB_HOST",
    "PORTAL_PULSE_WEB_PORT",
)
DATA_DIR = "/var/lib/portal-pulse"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def _secrets(service: dict) -> list[str]:
    """Secret names a service uses (short syntax or long syntax with ``source``)."""
    return [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]


def _secret_targets(service: dict) -> set[str]:
    targets = set()
    for s in service.get("secrets", []):
        if isinstance(s, str):
            targets.add(f"/run/secrets/{s}")
        else:
            target = s.get("target", s["source"])
            targets.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return targets


def _settings_env_names() -> set[str]:
    """Every environment name the settings read: PORTAL_PULSE_<FIELD> plus the fields' aliases."""
    names = {f"PORTAL_PULSE_{name.upper()}" for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [])
        names.update(c for c in choices if isinstance(c, str))
    return names


def _one_shot(service: dict) -> bool:
    """A set-up job (``kafka-setup``): runs once, exits, and is never restarted; the services
    that need it wait for it to complete, not to be healthy."""
    return service.get("restart") == "no"


def _healthcheck_command(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    return [test] if isinstance(test, str) else list(test)


# --- The stack --------------------------------------------------------------------------------


def test_compose_has_the_production_like_stack(compose: dict) -> None:
    assert set(compose["services"]) == SERVICES
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    kafka_env = _env(compose["services"]["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"], "KRaft mode, no ZooKeeper"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(compose: dict, name: str) -> None:
    service = compose["services"][name]
    if _one_shot(service):
        return  # it exits within seconds: nothing to probe
    check = service.get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable", False)
    command = _healthcheck_command(service)
    assert command[0] in {"CMD", "CMD-SHELL"} and len(command) > 1, command


def test_dependencies_wait_for_healthy_services(compose: dict) -> None:
    for name, service in compose["services"].items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in compose["services"], (name, dep)
            wanted = (
                "service_completed_successfully"
                if _one_shot(compose["services"][dep])
                else "service_healthy"
            )
            assert cond["condition"] == wanted, (name, dep)


# --- Secrets ----------------------------------------------------------------------------------


def test_every_secret_a_service_uses_is_declared_and_documented(compose: dict) -> None:
    declared = compose["secrets"]
    used = {s for service in compose["services"].values() for s in _secrets(service)}
    assert used <= set(declared), used - set(declared)
    assert set(declared) <= used, "declared but unused secrets"
    doc = DEPLOYMENT_DOC.read_text()
    ignored = (DOCKER / "secrets" / ".gitignore").read_text().splitlines()
    assert "*" in ignored, "docker/secrets/.gitignore keeps secret files out of git"
    for name, spec in declared.items():
        path = (DOCKER / spec["file"]).resolve()
        assert path.parent == DOCKER / "secrets", (name, spec)
        assert f"`{name}`" in doc, f"secret {name} is not documented in docs/deployment.md"
        assert f"docker/secrets/{path.name}" in doc, f"{path.name}: no set-up step in deployment.md"


def test_every_secret_file_a_service_reads_is_mounted_into_it(compose: dict) -> None:
    """Each ``/run/secrets/...`` named in a service's environment (or, for Grafana, in its
    provisioning) is a secret that service mounts."""
    provisioning = "\n".join(p.read_text() for p in PROVISIONING.rglob("*.yaml"))
    for name, service in compose["services"].items():
        texts = list(_env(service).values())
        if name == "grafana":
            texts.append(provisioning)
        wanted = set(re.findall(r"/run/secrets/[\w.-]+", "\n".join(texts)))
        assert wanted <= _secret_targets(service), (name, wanted - _secret_targets(service))


def test_no_password_or_key_is_a_value_in_the_compose_file(compose: dict) -> None:
    for name, service in compose["services"].items():
        for var, value in _env(service).items():
            if re.search(r"PASSWORD|KEY|TOKEN", var) and not var.endswith("_FILE"):
                pytest.fail(f"{name}: {var}={value!r} should come from a secret file")


# --- The worker -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKERS)
def test_worker_environment_is_understood_by_the_settings(
    compose: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """Each worker service's environment, read by the settings as in the image: every role gets
    its pseudonym key from the secret file (the worker refuses to start without one); the roles
    that write ClickHouse get the server and the writer's password file, and `process`, which
    never opens ClickHouse, gets neither."""
    from portal_pulse.pseudonym import load_key

    for var in _settings_env_names():  # nothing from the environment running the tests
        monkeypatch.delenv(var, raising=False)
    worker = compose["services"][name]
    env = _env(worker)
    unknown = set(env) - _settings_env_names()
    assert not unknown, f"the {name} service's settings read no {sorted(unknown)}"
    # Secret files: the same paths, with test content, so the settings read them as in the image.
    for secret in _secrets(worker):
        (tmp_path / secret).write_text(f"test-{secret}-not-a-secret-32-bytes\n")
    for var, value in env.items():
        if value.startswith("/run/secrets/"):
            value = str(tmp_path / value.removeprefix("/run/secrets/"))
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.pseudonym_key_file == tmp_path / "pseudonym_key"
    assert load_key(settings) == b"test-pseudonym_key-not-a-secret-32-bytes"
    assert str(settings.data_dir) == DATA_DIR
    # Secrets are files, never values in the compose file.
    assert "PORTAL_PULSE_PSEUDONYM_KEY" not in env
    assert "PORTAL_PULSE_CLICKHOUSE_PASSWORD" not in env
    assert env["PORTAL_PULSE_PSEUDONYM_KEY_FILE"] == "/run/secrets/pseudonym_key"
    if name in CLICKHOUSE_WRITERS:
        assert settings.clickhouse_dsn.startswith("http://clickhouse:8123")
        assert settings.clickhouse_password is not None
        assert (
            settings.clickhouse_password.get_secret_value()
            == "test-clickhouse_password-not-a-secret-32-bytes"
        )
        assert env["PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE"] == "/run/secrets/clickhouse_password"
    else:
        assert not [var for var in env if "CLICKHOUSE" in var], f"{name} never opens ClickHouse"
        assert "clickhouse_password" not in _secrets(worker)
        assert "clickhouse" not in (worker.get("depends_on") or {})


@pytest.mark.parametrize("name", CLICKHOUSE_WRITERS)
def test_worker_and_clickhouse_share_the_writer_user_and_password(compose: dict, name: str) -> None:
    """The worker logs in as the runtime user of docker/clickhouse/users.xml, whose password
    hash the ClickHouse service computes from the same secret file."""
    worker, clickhouse = (_env(compose["services"][n]) for n in (name, "clickhouse"))
    user = worker["PORTAL_PULSE_CLICKHOUSE_USER"]
    assert user == "pulse"
    assert f"<{user}>" in (DOCKER / "clickhouse" / "users.xml").read_text()
    assert (
        worker["PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE"]
        == clickhouse["CLICKHOUSE_WRITER_PASSWORD_FILE"]
        == "/run/secrets/clickhouse_password"
    )


def test_dockerfile_environment_is_understood_by_the_settings() -> None:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    names = set()
    for line in re.findall(r"^ENV\s+(.+)$", text, flags=re.MULTILINE):
        names.update(re.findall(r"(\w+)=", line))
    ours = {n for n in names if n.startswith("PORTAL_PULSE_")}
    assert ours, "the image sets its data directory and web address"
    assert ours <= _settings_env_names(), ours - _settings_env_names()


@pytest.mark.parametrize("name", WORKERS)
def test_worker_mounts_a_practices_file_that_exists(compose: dict, name: str) -> None:
    service = compose["services"][name]
    practices = Path(_env(service)["PORTAL_PULSE_PRACTICES_FILE"])
    assert f"../config:{practices.parent}:ro" in service["volumes"]
    assert (ROOT / "config" / practices.name).is_file()
    from portal_pulse.domain.practices import Practices

    Practices.load(ROOT / "config" / practices.name)  # valid per SPEC §3


def test_dockerfile_copies_what_exists_and_runs_the_cli() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for part in src.split():
            assert (ROOT / part).exists(), part
    assert 'ENTRYPOINT ["portal-pulse"]' in text
    assert "USER " in text, "the worker does not run as root"


def test_worker_data_dir_is_a_volume_the_worker_user_owns(compose: dict) -> None:
    """PORTAL_PULSE_DATA_DIR is a named volume, and the image creates that directory owned by
    the non-root user (a new named volume takes the ownership of the image's directory)."""
    worker = compose["services"]["worker"]
    data_dir = _env(worker)["PORTAL_PULSE_DATA_DIR"]
    assert data_dir == DATA_DIR
    mounts = [v.split(":") for v in worker["volumes"]]
    named = [m for m in mounts if m[1] == data_dir]
    assert named and named[0][0] in compose["volumes"], "a named volume at the data directory"
    text = (DOCKER / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)[-1]
    assert user != "root"
    assert f"mkdir -p -m 0700 {data_dir}" in text, "created private: it holds PHI and state"
    assert re.search(rf"chown {user}(:{user})? {re.escape(data_dir)}\b", text)
    assert f"PORTAL_PULSE_DATA_DIR={data_dir}" in text
    # The VOLUME (and so the copy of its ownership) comes after the chown.
    assert text.index(f'VOLUME ["{data_dir}"]') > text.index(f"chown {user}")


def test_faust_data_dir_is_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The app the worker builds keeps Faust's files under PORTAL_PULSE_DATA_DIR, not in the
    working directory (root-owned /app in the image)."""
    import streams.app

    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "state"
    monkeypatch.setenv("PORTAL_PULSE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PORTAL_PULSE_PSEUDONYM_KEY", "k" * 32)
    # The process role opens no ClickHouse: only the app's configuration matters here.
    app, rt = streams.app.build_app(Settings(), "kafka:9092", role="process")
    rt.close()
    conf = app.conf
    for path in (conf.datadir, conf.appdir, conf.tabledir):
        assert Path(path).resolve().is_relative_to(data_dir.resolve()), path
    assert not list(tmp_path.glob("*-data")), "nothing in the working directory"


# --- The worker's web endpoint: healthcheck and Prometheus ------------------------------------


def _web_port(compose: dict, name: str = "worker") -> int:
    return int(_env(compose["services"][name])["PORTAL_PULSE_WEB_PORT"])


@pytest.mark.parametrize("name", WORKERS)
def test_worker_listens_on_all_interfaces_in_the_container(compose: dict, name: str) -> None:
    assert _env(compose["services"][name])["PORTAL_PULSE_WEB_HOST"] == "0.0.0.0"
    # A published port reaches the web endpoint's port in the container.
    for port in compose["services"][name].get("ports", []):
        assert str(port).split(":")[-1] == str(_web_port(compose, name)), (name, port)


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("name", WORKERS)
@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_worker_healthcheck_probes_healthz(
    compose: dict, name: str, status: int, healthy: bool
) -> None:
    """The healthcheck is python + urllib on /healthz at the web port: it passes on 200 and
    fails otherwise (run here against a stand-in server on a free port)."""
    command = _healthcheck_command(compose["services"][name])
    assert command[:3] == ["CMD", "python", "-c"], "the image has no curl"
    code = command[3]
    port = _web_port(compose, name)
    assert f"127.0.0.1:{port}/healthz" in code

    handler = type("Probe", (_Probe,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = code.replace(f"127.0.0.1:{port}", f"127.0.0.1:{server.server_address[1]}")
        result = subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()


def _prometheus_config() -> dict:
    return yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())


def test_prometheus_scrapes_the_worker_web_port(compose: dict) -> None:
    prom = compose["services"]["prometheus"]
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert f"./prometheus/prometheus.yml:{config_path}:ro" in prom["volumes"]
    config = _prometheus_config()
    worker_jobs = [
        job
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        if f"worker:{_web_port(compose)}" in static["targets"]
    ]
    assert worker_jobs, "no scrape job targets worker:<PORTAL_PULSE_WEB_PORT>"
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in worker_jobs)


def _dns_sd_jobs(config: dict, name: str, port: int) -> list[dict]:
    """Jobs that discover every address of the compose service ``name`` (Docker's DNS answers a
    service's name with one A record per container) and scrape each at ``port``."""
    return [
        job
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        if name in sd["names"] and sd.get("type") == "A" and int(sd["port"]) == port
    ]


def test_prometheus_scrapes_every_process_replica_and_the_sink(compose: dict) -> None:
    config = _prometheus_config()
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs)), "Prometheus refuses duplicate job names"
    # Every replica: a static process:<port> would reach one container of many (DNS round robin).
    process_jobs = _dns_sd_jobs(config, "process", _web_port(compose, "process"))
    assert process_jobs, "no dns_sd_configs job (type A) on process at its web port"
    port = _web_port(compose, "sink")
    sink_jobs = _dns_sd_jobs(config, "sink", port) + [
        job
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        if f"sink:{port}" in static["targets"]
    ]
    assert sink_jobs, "no scrape job targets sink:<PORTAL_PULSE_WEB_PORT>"
    for job in process_jobs + sink_jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics", job
        assert not any(
            "process" in str(static["targets"]) for static in job.get("static_configs", [])
        ), job


# --- The scale-out form: profile `roles` ------------------------------------------------------


def test_roles_profile_runs_process_replicas_and_a_sink_beside_the_default_worker(
    compose: dict,
) -> None:
    services = compose["services"]
    for name, service in services.items():
        expected = [ROLES_PROFILE] if name in ("process", "sink") else []
        assert service.get("profiles", []) == expected, name
    process, sink = services["process"], services["sink"]
    assert process["command"][0] == "worker"
    assert process["command"][1:3] == ["--role", "process"], process["command"]
    assert sink["command"][0] == "worker"
    assert sink["command"][1:3] == ["--role", "sink"], sink["command"]
    assert "--role" not in services["worker"]["command"], "the default worker runs role all"
    assert process["deploy"]["replicas"] >= 2
    assert not process.get("ports"), "a published port would clash between the replicas"
    # Each process container keeps its own data directory: no named volume shared by replicas.
    for name in ("process", "sink"):
        shared = [
            v
            for v in services[name].get("volumes", [])
            if v.split(":")[1] == DATA_DIR and v.split(":")[0] in (compose.get("volumes") or {})
        ]
        others = [
            v for other in WORKERS if other != name for v in services[other].get("volumes", [])
        ]
        assert name != "process" or not shared, f"process replicas would share {shared}"
        assert not set(shared) & set(others), f"{name} shares a data volume with another worker"
    # The same image, restart policy, grace period and healthcheck as the worker.
    for key in ("image", "build", "restart", "stop_grace_period", "healthcheck", "env_file"):
        assert process.get(key) == sink.get(key) == services["worker"].get(key), key
    # Dependencies: the process role never waits for ClickHouse; the sink does.
    assert {"kafka", "kafka-setup"} <= set(process["depends_on"])
    assert "clickhouse" not in process["depends_on"]
    assert {"kafka", "kafka-setup", "clickhouse"} <= set(sink["depends_on"])


def _node(mapping: yaml.MappingNode, key: str) -> yaml.Node:
    return next(value for k, value in mapping.value if k.value == key)


def test_worker_services_share_one_environment_anchor(compose: dict) -> None:
    """The common settings come from one extension field (``x-...``) that every worker service
    merges (``<<: *anchor``), not from copies that could drift apart."""
    root = yaml.compose((DOCKER / "compose.yaml").read_text())
    assert isinstance(root, yaml.MappingNode)
    extensions = [value for k, value in root.value if k.value.startswith("x-")]
    anchors = [
        node
        for node in extensions
        if isinstance(node, yaml.MappingNode)
        and set(COMMON_ENV) <= {k.value for k, _ in node.value}
    ]
    assert len(anchors) == 1, "one x- extension field holds the common worker environment"
    anchor = anchors[0]
    services = _node(root, "services")
    assert isinstance(services, yaml.MappingNode)
    for name in WORKERS:
        env = _node(_node(services, name), "environment")
        assert isinstance(env, yaml.MappingNode), name
        merged: list[yaml.Node] = []
        for key, value in env.value:
            if key.tag == "tag:yaml.org,2002:merge":
                merged += value.value if isinstance(value, yaml.SequenceNode) else [value]
            else:
                assert key.value not in COMMON_ENV, f"{name} overrides {key.value}"
        assert any(node is anchor for node in merged), f"{name} does not merge the common anchor"
    values = {name: {v: _env(compose["services"][name])[v] for v in COMMON_ENV} for name in WORKERS}
    assert values["worker"] == values["process"] == values["sink"]
    assert values["worker"]["PORTAL_PULSE_DATA_DIR"] == DATA_DIR


# --- Grafana and ClickHouse's BI user ---------------------------------------------------------


def _datasources() -> list[dict]:
    sources = []
    for path in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        sources += yaml.safe_load(path.read_text())["datasources"]
    return sources


def test_grafana_provisioning_points_at_clickhouse_with_the_read_only_user(compose: dict) -> None:
    """Grafana reads as `bi`; what `bi` may do is tested in test_docker_clickhouse_users.py."""
    source = next(s for s in _datasources() if s["type"] == "grafana-clickhouse-datasource")
    assert source["jsonData"]["username"] == "bi"
    assert source["jsonData"]["host"] == "clickhouse"
    assert source["secureJsonData"]["password"] == "$__file{/run/secrets/bi_password}"
    assert "bi_password" in _secrets(compose["services"]["grafana"])
    users = (DOCKER / "clickhouse" / "users.xml").read_text()
    # 2, not 1: Grafana's ClickHouse client sets max_execution_time on every query.
    assert "<readonly>2</readonly>" in users
    assert "GRANT SELECT ON default.*" not in users


def test_clickhouse_gets_the_bi_password_from_the_same_secret(compose: dict) -> None:
    clickhouse = compose["services"]["clickhouse"]
    env = _env(clickhouse)
    assert env["CLICKHOUSE_BI_PASSWORD_FILE"] == "/run/secrets/bi_password"
    assert "bi_password" in _secrets(clickhouse)
    users = (DOCKER / "clickhouse" / "users.xml").read_text()
    bi = users[users.index("<bi>") :]
    var = re.search(r'<password_sha256_hex from_env="(\w+)"', bi)
    assert var, "the bi user's password hash comes from the environment"
    script = (DOCKER / "clickhouse" / "entrypoint.sh").read_text()
    assert var.group(1) in script
    # The wrapper is mounted where the service's entrypoint runs it.
    target = clickhouse["entrypoint"][-1]
    assert f"./clickhouse/entrypoint.sh:{target}:ro" in clickhouse["volumes"]


def test_grafana_has_a_prometheus_data_source_on_the_prometheus_service(compose: dict) -> None:
    source = next(s for s in _datasources() if s["type"] == "prometheus")
    assert source["url"] == "http://prometheus:9090"
    assert "9090" in str(compose["services"]["prometheus"]["healthcheck"]["test"])
    uids = [s["uid"] for s in _datasources()]
    assert len(uids) == len(set(uids))
    assert sum(bool(s.get("isDefault")) for s in _datasources()) <= 1


def _dashboards() -> dict[str, dict]:
    folder = PROVISIONING / "dashboards"
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_dashboards_use_provisioned_data_sources() -> None:
    sources = {s["uid"]: s["type"] for s in _datasources()}
    for name, dash in _dashboards().items():
        for panel in dash["panels"]:
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]:
                if ds:
                    assert sources.get(ds["uid"]) == ds["type"], (name, panel["title"], ds)
    uids = [d["uid"] for d in _dashboards().values()]
    assert len(uids) == len(set(uids))


# The ClickHouse dashboard's SQL, run on chDB with hostile practice ids: test_grafana_sql.py.


# PromQL words that are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, ranges, groupings, functions and
    Grafana's $__variables left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)  # strings
    expr = re.sub(r"\$__\w+|\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b\d+(\.\d+)?(ms|[smhdwy])?\b", "", expr)  # numbers, durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", expr):
        word = match.group()
        followed_by_paren = expr[match.end() :].lstrip().startswith("(")
        if word.lower() in _PROMQL_WORDS or followed_by_paren:
            continue
        names.add(word)
    return names


def test_promql_metric_names_parser() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le, table) (rate(a_bucket{x="y(z)"}[$__rate_interval])))'
    ) == {"a_bucket"}
    assert promql_metric_names("sum(b) / ignoring (p) c offset 5m") == {"b", "c"}


def _exported_series_names() -> set[str]:
    """Series names a worker's /metrics exposes (what Prometheus stores), from its registry."""
    from portal_pulse.metrics import PipelineMetrics

    names = set()
    for family in PipelineMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


# Series Prometheus makes itself: the state of its alerting rules, and each target's scrape.
PROMETHEUS_SERIES = {"ALERTS", "up"}


def _allowed_series_names() -> set[str]:
    from portal_pulse.metrics import METRIC_NAMES

    allowed = set(METRIC_NAMES) | PROMETHEUS_SERIES
    allowed.update(f"{n}{s}" for n in METRIC_NAMES for s in ("_bucket", "_sum", "_count"))
    return allowed


def _promql_targets() -> list[tuple[str, str, str]]:
    return [
        (name, panel["title"], target["expr"])
        for name, dash in _dashboards().items()
        for panel in dash["panels"]
        for target in panel["targets"]
        if "expr" in target
    ]


def test_dashboard_promql_names_only_exported_metrics() -> None:
    targets = _promql_targets()
    assert targets, "a provisioned dashboard on Prometheus"
    allowed = _allowed_series_names()
    exported = _exported_series_names()
    for dashboard, title, expr in targets:
        names = promql_metric_names(expr)
        assert names, (dashboard, title, expr)
        assert names <= allowed, (
            f"{dashboard} / {title}: {sorted(names - allowed)} not in METRIC_NAMES"
        )
        assert names <= exported | PROMETHEUS_SERIES, (
            f"{dashboard} / {title}: {sorted(names - exported)} not exported"
        )


def test_pipeline_health_dashboard_shows_what_on_call_needs() -> None:
    dash = _dashboards()["pipeline-health.json"]
    assert dash["title"] == "Portal Pulse — pipeline health"
    used = {
        n
        for panel in dash["panels"]
        for t in panel["targets"]
        for n in promql_metric_names(t["expr"])
    }
    needed = {
        "portal_pulse_events_total",
        "portal_pulse_consumer_lag",
        "portal_pulse_event_clock_lag_seconds",
        "portal_pulse_dead_letters_total",
        "portal_pulse_alerts_total",
        "portal_pulse_alert_emit_delay_seconds_bucket",
        "portal_pulse_sink_rows_total",
        "portal_pulse_sink_errors_total",
        "portal_pulse_sink_batch_seconds_bucket",
        "portal_pulse_webhook_deliveries_total",
        "portal_pulse_state_keys",
        "portal_pulse_rebalances_total",
        "portal_pulse_ready",
    }
    assert needed <= used, sorted(needed - used)
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for q in ("0.5", "0.95"):
        assert f"histogram_quantile({q}, sum by (le) (rate(portal_pulse_alert_emit_delay" in exprs


def test_pipeline_health_dashboard_lists_the_firing_rules_below_the_other_panels() -> None:
    panels = _dashboards()["pipeline-health.json"]["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    firing = [p for p in panels if any("ALERTS" in t["expr"] for t in p["targets"])]
    assert len(firing) == 1, "one panel of firing rules"
    panel = firing[0]
    (target,) = panel["targets"]
    assert re.fullmatch(r'ALERTS\{alertstate="firing"\}', target["expr"]), target["expr"]
    assert target["instant"] is True and target["format"] == "table"
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels if p is not panel)
    assert panel["gridPos"]["y"] >= bottom, "appended below the existing panels"


RULES = DOCKER / "prometheus" / "rules"


def test_prometheus_loads_the_rules_and_sends_to_the_alertmanager(compose: dict) -> None:
    prom = compose["services"]["prometheus"]
    mounts = [v.split(":") for v in prom["volumes"] if v.startswith("./prometheus/rules")]
    assert len(mounts) == 1 and mounts[0][2] == "ro", prom["volumes"]
    inside = mounts[0][1]
    config = _prometheus_config()
    loaded = set()
    for pattern in config["rule_files"]:
        assert pattern.startswith(inside + "/"), (pattern, inside)
        loaded |= {p.name for p in RULES.glob(pattern.removeprefix(inside + "/"))}
    # The rules load; promtool's test file beside them does not.
    assert loaded == {"portal-pulse.rules.yml"}, loaded
    targets = [
        t
        for am in config["alerting"]["alertmanagers"]
        for static in am["static_configs"]
        for t in static["targets"]
    ]
    assert targets == ["alertmanager:9093"]


def test_rules_name_only_exported_metrics_and_link_their_runbook() -> None:
    rules = [
        rule
        for group in yaml.safe_load((RULES / "portal-pulse.rules.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    allowed = _allowed_series_names()
    exported = _exported_series_names() | PROMETHEUS_SERIES
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", operations, re.M)
    }
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        used = promql_metric_names(rule["expr"])
        assert used and used <= allowed and used <= exported, (rule["alert"], used - exported)
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert "for" in rule, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower(), notes
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/operations.md"


# --- Kafka from the host ----------------------------------------------------------------------


def test_kafka_is_reachable_from_the_host_and_the_network(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    advertised = dict(
        reversed(item.split("://", 1)) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    listeners = {
        item.split("://", 1)[0]: item.split("://", 1)[1]
        for item in env["KAFKA_LISTENERS"].split(",")
    }
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    assert set(advertised.values()) <= set(listeners)
    # In the network: the address the workers use.
    for name in WORKERS:
        assert _env(compose["services"][name])["KAFKA_BOOTSTRAP_SERVERS"] in advertised, name
    # From the host: a listener advertised as localhost:P, with port P published as P.
    host = [a for a in advertised if a.startswith("localhost:")]
    assert host, "no listener advertised for clients on the host"
    port = host[0].split(":")[1]
    assert listeners[advertised[host[0]]].endswith(f":{port}")
    assert any(str(p).endswith(f"{port}:{port}") for p in kafka["ports"])
    assert f"localhost:{port}" in DEPLOYMENT_DOC.read_text()


# --- Documentation ----------------------------------------------------------------------------


def test_deployment_doc_is_linked_and_names_the_entry_points(compose: dict) -> None:
    assert "deployment.md" in (ROOT / "docs" / "README.md").read_text()
    doc = DEPLOYMENT_DOC.read_text()
    assert "docker compose -f docker/compose.yaml up" in doc
    for service in ("grafana", "prometheus"):
        published = compose["services"][service]["ports"][0].split(":")[-1]
        assert f"http://localhost:{published}" in doc, service
    head = (DOCKER / "compose.yaml").read_text().split("\nname:")[0]
    for spec in compose["secrets"].values():
        assert Path(spec["file"]).name in head, f"set-up comment omits {spec['file']}"


def test_deployment_doc_says_how_to_run_the_roles(compose: dict) -> None:
    doc = DEPLOYMENT_DOC.read_text()
    split = (
        f"docker compose -f docker/compose.yaml --profile {ROLES_PROFILE} up -d --scale worker=0"
    )
    assert split in doc
    assert "Which to run" in doc
    for name in ("process", "sink"):
        assert f"`{name}`" in doc, name
    published = compose["services"]["sink"]["ports"][0].split(":")[-2]
    assert f"portal-pulse status --worker http://localhost:{published}" in doc


# --- Kafka: logins and ACLs -------------------------------------------------------------------


def _kafka_env(compose: dict) -> dict[str, str]:
    return _env(compose["services"]["kafka"])


def test_kafka_wants_a_login_on_every_listener_and_an_acl_for_everything(compose: dict) -> None:
    from portal_pulse.broker import SUPER_USER

    env = _kafka_env(compose)
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert all(p.startswith("SASL_") for p in protocols.values()), protocols
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert env["KAFKA_SUPER_USERS"] == f"User:{SUPER_USER}"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    # The controller answers on the container's loopback only; the host port on 127.0.0.1 only.
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners["CONTROLLER"].startswith("127.0.0.1:")
    assert all(str(p).startswith("127.0.0.1:") for p in compose["services"]["kafka"]["ports"])
    # The admin password reaches the broker through the entrypoint, from a mounted secret.
    assert env["PORTAL_PULSE_KAFKA_ADMIN_PASSWORD_FILE"] == "/run/secrets/kafka_admin_password"
    target = compose["services"]["kafka"]["entrypoint"][-1]
    assert f"./kafka/entrypoint.sh:{target}:ro" in compose["services"]["kafka"]["volumes"]
    assert "--command-config" in " ".join(_healthcheck_command(compose["services"]["kafka"]))


@pytest.mark.parametrize("name", WORKERS)
def test_workers_log_in_to_kafka_as_the_pipeline(
    compose: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    from portal_pulse.kafka_acls import PIPELINE, SCRAM_MECHANISM

    for var in _settings_env_names():
        monkeypatch.delenv(var, raising=False)
    env = _env(compose["services"][name])
    secret = env["PORTAL_PULSE_KAFKA_SASL_PASSWORD_FILE"]
    assert secret.removeprefix("/run/secrets/") in _secrets(compose["services"][name])
    (tmp_path / "pw").write_text("pipeline-pw\n")
    env["PORTAL_PULSE_KAFKA_SASL_PASSWORD_FILE"] = str(tmp_path / "pw")
    for var, value in env.items():
        if not value.startswith("/run/secrets/"):
            monkeypatch.setenv(var, value)
    conf = Settings().kafka_client_config()
    assert conf == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": PIPELINE,
        "sasl.password": "pipeline-pw",
    }
    assert (compose["services"][name]["depends_on"]["kafka-setup"]["condition"]) == (
        "service_completed_successfully"
    )


def test_kafka_setup_applies_the_rules_as_the_super_user_with_every_login(compose: dict) -> None:
    from portal_pulse.broker import SUPER_USER
    from portal_pulse.kafka_acls import PRINCIPALS, password_file

    setup = compose["services"]["kafka-setup"]
    assert setup["entrypoint"][:3] == ["python", "-m", "portal_pulse.kafka_acls"]
    directory = Path(setup["entrypoint"][setup["entrypoint"].index("--passwords-dir") + 1])
    env = _env(setup)
    assert env["PORTAL_PULSE_KAFKA_SASL_USERNAME"] == SUPER_USER
    assert env["PORTAL_PULSE_KAFKA_SASL_MECHANISM"] == "PLAIN"
    assert (
        env["KAFKA_BOOTSTRAP_SERVERS"]
        == _env(compose["services"]["worker"])["KAFKA_BOOTSTRAP_SERVERS"]
    )
    wanted = {password_file(directory, u).name for u in PRINCIPALS} | {"kafka_admin_password"}
    assert set(_secrets(setup)) == wanted
    assert {f"/run/secrets/{s}" for s in wanted} == {
        str(directory / s) for s in _secret_targets(setup)
    }
    assert _one_shot(setup) and setup["depends_on"]["kafka"]["condition"] == "service_healthy"


def _run_kafka_entrypoint(tmp_path: Path, password: str | None) -> subprocess.CompletedProcess:
    """The wrapper with the image's start script replaced by a stub that prints KAFKA_OPTS and
    its arguments, and the config directory in ``tmp_path``."""
    stub = tmp_path / "run"
    stub.write_text('#!/bin/bash\necho "$KAFKA_OPTS $*"\n')
    stub.chmod(0o755)
    script = (DOCKER / "kafka" / "entrypoint.sh").read_text()
    assert "exec /etc/kafka/docker/run " in script
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(script.replace("exec /etc/kafka/docker/run ", f"exec {stub} "))
    secret = tmp_path / "kafka_admin_password"
    if password is not None:
        secret.write_text(password)
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(mode=0o755, exist_ok=True)
    (tmp_path / "data").chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "PORTAL_PULSE_KAFKA_ADMIN_PASSWORD_FILE": str(secret),
        "PORTAL_PULSE_KAFKA_CONFIG_DIR": str(tmp_path / "config"),
        "KAFKA_LOG_DIRS": str(tmp_path / "data"),
    }
    return subprocess.run(
        ["bash", str(wrapper), "--x"], env=env, capture_output=True, text=True, timeout=30
    )


def test_kafka_entrypoint_writes_private_logins_and_hands_over(tmp_path: Path) -> None:
    import os
    import stat

    config = tmp_path / "config"
    config.mkdir()
    planted = tmp_path / "elsewhere"
    planted.write_text("untouched")
    (config / "portal-pulse-jaas.conf").symlink_to(planted)
    out = _run_kafka_entrypoint(tmp_path, "0123abcd\n")
    assert out.returncode == 0, out.stderr
    jaas = config / "portal-pulse-jaas.conf"
    assert out.stdout.split() == [f"-Djava.security.auth.login.config={jaas}", "--x"]
    assert planted.read_text() == "untouched", "the wrapper wrote through a planted link"
    for name in ("portal-pulse-jaas.conf", "portal-pulse-admin.properties"):
        info = os.lstat(config / name)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, name
        assert 'password="0123abcd"' in (config / name).read_text(), name
    assert 'user_admin="0123abcd"' in jaas.read_text()
    assert "ScramLoginModule" in jaas.read_text()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert "0123abcd" not in out.stdout + out.stderr


@pytest.mark.parametrize("password", [None, "", 'pw" user_evil="x'])
def test_kafka_entrypoint_refuses_a_missing_or_unquotable_password(
    tmp_path: Path, password: str | None
) -> None:
    out = _run_kafka_entrypoint(tmp_path, password)
    assert out.returncode != 0
    assert "kafka_admin_password" in out.stderr
    assert not (tmp_path / "config" / "portal-pulse-jaas.conf").exists()
