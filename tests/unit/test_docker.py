"""What can be checked of docker/ without a Docker engine: the files agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from portal_pulse.broker import KAFKA_VERSION
from portal_pulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_the_production_like_stack(compose: dict) -> None:
    assert set(compose["services"]) == {"kafka", "clickhouse", "worker", "grafana"}
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    kafka_env = compose["services"]["kafka"]["environment"]
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"], "KRaft mode, no ZooKeeper"


def test_worker_environment_is_understood_by_the_settings(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["services"]["worker"]["environment"]
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.clickhouse_dsn.startswith("http://clickhouse:8123")
    assert str(settings.pseudonym_key_file) == "/run/secrets/pseudonym_key"
    fields = {f"PORTAL_PULSE_{name.upper()}" for name in Settings.model_fields}
    for name in env:
        assert name in fields or name in {"KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"}, name
    # The pseudonym key is a secret file, never a value in the compose file.
    assert "PORTAL_PULSE_PSEUDONYM_KEY" not in env
    assert "pseudonym_key" in compose["services"]["worker"]["secrets"]


def test_worker_mounts_a_practices_file_that_exists(compose: dict) -> None:
    volumes = compose["services"]["worker"]["volumes"]
    assert any(v.startswith("../config:/config") for v in volumes)
    assert (ROOT / "config" / "practices.yaml").is_file()
    from portal_pulse.domain.practices import Practices

    Practices.load(ROOT / "config" / "practices.yaml")  # valid per SPEC §3


def test_dockerfile_copies_what_exists_and_runs_the_cli() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for part in src.split():
            assert (ROOT / part).exists(), part
    assert 'ENTRYPOINT ["portal-pulse"]' in text
    assert "USER " in text, "the worker does not run as root"


def test_grafana_provisioning_points_at_clickhouse_with_the_read_only_user() -> None:
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    source = ds["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["username"] == "bi"
    users = (DOCKER / "clickhouse/bi-readonly-user.xml").read_text()
    assert "<readonly>1</readonly>" in users
    assert "GRANT SELECT" in users


def test_grafana_dashboard_queries_run_on_the_real_schema(chdb_client) -> None:  # type: ignore[no-untyped-def]
    """Every panel's SQL (with the practice variable filled in) runs against the migrated schema."""
    import json

    dash = json.loads((DOCKER / "grafana/provisioning/dashboards/portal-pulse.json").read_text())
    queries = [t["rawSql"] for p in dash["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dash["templating"]["list"]]
    assert len(queries) >= 8
    for sql in queries:
        chdb_client.query(sql.replace("${practice}", "P001"))
