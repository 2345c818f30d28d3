"""The compose stack's ClickHouse users (docker/clickhouse/), checked without a server.

What can be checked here: the XML is what ClickHouse itself accepts (loaded by chDB's access
code in a child process), every grant names a table or view the migrations create, `bi` reads
only aggregate views, the runtime user `pulse` cannot change the schema, the settings
constraints and the quota exist, and compose wires the secrets through. chDB cannot log in as
another user (it runs as `default`, and EXECUTE AS needs a server setting chDB does not read),
so what each user may do is checked from the grants, not by running queries as them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest
import yaml
from clickhouse_connect.driver.client import Client

ROOT = Path(__file__).resolve().parents[2]
CLICKHOUSE_DIR = ROOT / "docker" / "clickhouse"
USERS_XML = CLICKHOUSE_DIR / "users.xml"
COMPOSE = ROOT / "docker" / "compose.yaml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
DATABASE = "default"
ADMIN, WRITER, BI = "pulse_admin", "pulse", "bi"
# Per-patient or per-event rows: never readable by BI (pseudonyms, patient keys, result ids).
PER_PATIENT = {
    "events", "alerts", "message_responses", "dead_letters", "rollup_patient_years",
    "rollup_patient_firsts", "rollup_results", "rollup_sla", "events_local",
    "events_rollup_feed", "events_rollup_local", "practices", "local_days",
}  # fmt: skip
# The Null tables and base tables the worker writes (docs/deployment.md lists them).
WRITER_INSERTS = {
    "events", "dead_letters", "alerts", "message_responses", "live_metrics", "sink_positions",
    "practices", "local_days", "rollup_builds", "events_rollup_feed",
    "message_responses_rollup_feed", "alerts_rollup_feed", "monthly_portal_performance_rows",
}  # fmt: skip
PASSWORDS = {ADMIN: "admin-test", WRITER: "writer-test", BI: "bi-test"}
HASH_VARS = {
    ADMIN: "CLICKHOUSE_ADMIN_PASSWORD_SHA256",
    WRITER: "CLICKHOUSE_WRITER_PASSWORD_SHA256",
    BI: "CLICKHOUSE_BI_PASSWORD_SHA256",
}


def _users() -> ET.Element:
    return ET.parse(USERS_XML).getroot()


_GRANT = re.compile(r"^GRANT\s+(.+?)\s+ON\s+(\w+)\.(\w+|\*)$", re.IGNORECASE)


@cache
def _grants(user: str) -> dict[tuple[str, str], frozenset[str]]:
    node = _users().find(f"users/{user}")
    assert node is not None, f"no user {user} in users.xml"
    found: dict[tuple[str, str], set[str]] = {}
    for query in node.findall("grants/query"):
        match = _GRANT.match(" ".join((query.text or "").split()))
        assert match, f"{user}: cannot read {query.text!r}"
        rights = {r.strip().upper() for r in match.group(1).split(",")}
        found.setdefault((match.group(2), match.group(3)), set()).update(rights)
    return {key: frozenset(value) for key, value in found.items()}


def granted(user: str) -> dict[tuple[str, str], frozenset[str]]:
    """(database, table) → rights, from users.xml's GRANT queries for ``user``."""
    return _grants(user)


def _schema(client: Client) -> dict[str, str]:
    """Table or view → engine, in the migrated session database."""
    return dict(
        client.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    )


# --- What ClickHouse makes of the XML ---------------------------------------------------------

_LOADER = textwrap.dedent(
    """
    import json, sys
    import chdb
    conn = chdb.connect(f"file:{sys.argv[1]}/db?config-file={sys.argv[1]}/config.xml")
    cur = conn.cursor()
    out = {}
    for key, sql in {
        "users": "SELECT name, auth_type FROM system.users",
        "grants": "SELECT user_name, access_type, database, table FROM system.grants",
        "profiles": "SELECT profile_name, setting_name, value, max, writability "
                    "FROM system.settings_profile_elements WHERE profile_name != ''",
        "profile_users": "SELECT name, apply_to_list FROM system.settings_profiles",
        "quotas": "SELECT name, apply_to_list FROM system.quotas",
        "limits": "SELECT quota_name, duration, max_queries, max_errors, max_execution_time "
                  "FROM system.quota_limits",
    }.items():
        cur.execute(sql)
        out[key] = [list(map(str, row)) for row in cur.fetchall()]
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[str]]]:
    """users.xml as ClickHouse loads it: a users config standing in for the image's (a `default`
    user with access management, so that system.users and system.grants can be read), with
    users.xml merged from users.d/ as on the server, read by chDB in a child process (one chDB
    per process, and the session's is open)."""
    home = tmp_path_factory.mktemp("clickhouse-users")
    (home / "users.d").mkdir()
    (home / "users.d" / "portal-pulse-users.xml").write_text(USERS_XML.read_text())
    (home / "users.xml").write_text(
        "<clickhouse><profiles><default/></profiles><quotas><default/></quotas><users>"
        "<default><password/><networks><ip>::1</ip></networks><profile>default</profile>"
        "<quota>default</quota><access_management>1</access_management></default>"
        "</users></clickhouse>"
    )
    (home / "config.xml").write_text(
        f"<clickhouse><users_config>{home / 'users.xml'}</users_config></clickhouse>"
    )
    env = dict(os.environ)
    for user, var in HASH_VARS.items():
        env[var] = hashlib.sha256(PASSWORDS[user].encode()).hexdigest()
    out = subprocess.run(
        [sys.executable, "-c", _LOADER, str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_clickhouse_loads_the_three_users_with_hashed_passwords(loaded: dict) -> None:
    users = {row[0]: row for row in loaded["users"]}
    assert set(users) == {"default", ADMIN, WRITER, BI}  # `default` is the stand-in's
    for user in (ADMIN, WRITER, BI):
        assert "sha256_password" in users[user][1], user
        # No global grant (access management, SYSTEM, FILE, URL...): every right is on a table
        # or database of the pipeline's, or on system.processes.
        for u, right, db, table in loaded["grants"]:
            if u == user:
                assert db in (DATABASE, "system"), (user, right, db, table)


def test_loaded_grants_are_the_ones_in_the_file(loaded: dict) -> None:
    """ClickHouse keeps them as written: in particular no global privilege appears (``ALL ON
    db.*`` would add CREATE USER, IMPERSONATE, READ/WRITE of sources and more)."""
    for user in (ADMIN, WRITER, BI):
        rows = {(db, table, right) for u, right, db, table in loaded["grants"] if u == user}
        want = {
            (db, "None" if table == "*" else table, right)
            for (db, table), rights in granted(user).items()
            for right in rights
        }
        assert rows == want, (user, rows ^ want)


def test_bi_profile_pins_logging_and_caps_limits(loaded: dict) -> None:
    bi = {row[1]: row for row in loaded["profiles"] if row[0] == "bi_readonly"}
    assert bi["readonly"][2] == "2" and bi["readonly"][4] == "CONST"
    for setting in (
        "log_queries",
        "log_queries_min_type",
        "log_queries_min_query_duration_ms",
        "log_queries_probability",
        "allow_introspection_functions",
    ):
        assert bi[setting][4] == "CONST", setting
    assert bi["log_queries"][2] in ("1", "true")
    for setting in ("max_execution_time", "max_memory_usage", "max_threads", "max_result_rows"):
        assert bi[setting][3] not in ("None", ""), f"{setting} has no maximum"
    writer = {row[1]: row for row in loaded["profiles"] if row[0] == "pulse_writer"}
    assert writer["log_queries"][4] == "CONST"


def test_bi_has_an_hourly_quota(loaded: dict) -> None:
    quotas = dict((name, applies) for name, applies in loaded["quotas"])
    assert "bi" in quotas["bi_hourly"]
    limits = [row for row in loaded["limits"] if row[0] == "bi_hourly"]
    assert limits and all(row[2] != "None" and row[3] != "None" for row in limits)


# --- Grants against the schema ----------------------------------------------------------------


@pytest.mark.parametrize("user", [WRITER, BI])
def test_grants_name_only_tables_and_views_the_migrations_create(
    chdb_client: Client, user: str
) -> None:
    schema = _schema(chdb_client)
    for db, table in granted(user):
        if db == "system":
            continue
        assert db == DATABASE, (user, db)
        assert table in schema, f"{user} is granted {table}, which no migration creates"


def test_bi_reads_only_aggregate_views(chdb_client: Client) -> None:
    schema = _schema(chdb_client)
    grants = granted(BI)
    assert grants, "bi has grants"
    for (db, table), rights in grants.items():
        assert rights == {"SELECT"}, (table, rights)
        assert db == DATABASE and table != "*", "no database-wide grant"
        assert table not in PER_PATIENT
        assert schema[table] == "View", f"{table}: bi reads views, whose definer reads the rest"
        # The view runs as its definer, so bi needs no grant on what lies behind it.
        create = chdb_client.command(f"SHOW CREATE TABLE {table}")
        assert "SQL SECURITY DEFINER" in create, table
        columns = {r[0] for r in chdb_client.query(f"DESCRIBE TABLE {table}").result_rows}
        assert not columns & {"patient_pseudonym", "patient", "subject_id"}, table


def test_writer_may_insert_and_select_but_not_change_the_schema(chdb_client: Client) -> None:
    schema = _schema(chdb_client)
    grants = granted(WRITER)
    inserts = {t for (db, t), r in grants.items() if db == DATABASE and "INSERT" in r}
    assert inserts == WRITER_INSERTS
    for (db, table), rights in grants.items():
        assert rights <= {"SELECT", "INSERT"}, (table, rights)
        assert table != "*", "no database-wide grant"
        if db == "system":
            assert rights == {"SELECT"} and table == "processes"
    # Everything it may read: every table and plain view but the migrations' own record is
    # readable too (the worker checks it); materialized views are written only as their definer.
    readable = {t for (db, t), r in grants.items() if db == DATABASE and "SELECT" in r}
    wanted = {name for name, engine in schema.items() if engine != "MaterializedView"}
    assert readable == wanted, readable ^ wanted
    assert "schema_migrations" not in inserts


def test_materialized_views_write_as_their_definer(chdb_client: Client) -> None:
    """So the runtime user needs INSERT on the base tables only, not on the rollups."""
    rows = chdb_client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine = 'MaterializedView'"
    ).result_rows
    assert rows
    for name, create in rows:
        assert "SQL SECURITY DEFINER" in create, name


def test_admin_may_change_only_the_pipelines_tables_and_views() -> None:
    assert granted(ADMIN) == {
        (DATABASE, "*"): frozenset(
            {"SELECT", "INSERT", "CREATE TABLE", "CREATE VIEW", "ALTER TABLE", "ALTER VIEW",
             "DROP TABLE", "DROP VIEW"}
        )
    }  # fmt: skip


def test_no_user_manages_access_and_default_is_removed() -> None:
    for user in _users().findall("users/*"):
        assert user.findtext("access_management") == "0", user.tag
        assert user.find("password_sha256_hex") is not None, user.tag
        assert user.find("password") is None, f"{user.tag}: plain-text password"
    removal = ET.parse(CLICKHOUSE_DIR / "no-default-user.xml").getroot().find("users/default")
    assert removal is not None and removal.get("remove") == "remove"


def test_system_tables_need_a_grant() -> None:
    root = ET.parse(CLICKHOUSE_DIR / "access-control.xml").getroot()
    improvements = root.find("access_control_improvements")
    assert improvements is not None
    assert improvements.findtext("select_from_system_db_requires_grant") == "true"
    assert improvements.findtext("select_from_information_schema_requires_grant") == "true"


# --- Compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_mounts_the_users_and_skips_the_images_user_setup(compose: dict) -> None:
    clickhouse = compose["services"]["clickhouse"]
    env = {k: str(v) for k, v in clickhouse["environment"].items()}
    assert "CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT" not in env
    assert "CLICKHOUSE_USER" not in env and "CLICKHOUSE_PASSWORD" not in env
    assert env["CLICKHOUSE_SKIP_USER_SETUP"] == "1"
    volumes = clickhouse["volumes"]
    for name, where in (
        ("users.xml", "users.d"),
        ("no-default-user.xml", "users.d"),
        ("access-control.xml", "config.d"),
    ):
        assert any(
            v.startswith(f"./clickhouse/{name}:/etc/clickhouse-server/{where}/")
            and v.endswith(":ro")
            for v in volumes
        ), name
    assert not (CLICKHOUSE_DIR / "bi-readonly-user.xml").exists()


def test_each_users_password_comes_from_a_secret_the_service_mounts(compose: dict) -> None:
    clickhouse = compose["services"]["clickhouse"]
    env = clickhouse["environment"]
    script = (CLICKHOUSE_DIR / "entrypoint.sh").read_text()
    users_text = USERS_XML.read_text()
    for user, var in HASH_VARS.items():
        assert f'<password_sha256_hex from_env="{var}"/>' in users_text, user
        assert var in script, user
    secrets = {
        "CLICKHOUSE_ADMIN_PASSWORD_FILE": "clickhouse_admin_password",
        "CLICKHOUSE_WRITER_PASSWORD_FILE": "clickhouse_password",
        "CLICKHOUSE_BI_PASSWORD_FILE": "bi_password",
    }
    for var, secret in secrets.items():
        assert env[var] == f"/run/secrets/{secret}"
        assert var in script
        assert secret in clickhouse["secrets"]
        assert secret in compose["secrets"]


def test_entrypoint_hashes_every_password(tmp_path: Path) -> None:
    stub = tmp_path / "entrypoint.sh"
    stub.write_text(
        '#!/bin/bash\necho "$CLICKHOUSE_ADMIN_PASSWORD_SHA256 $CLICKHOUSE_WRITER_PASSWORD_SHA256'
        ' $CLICKHOUSE_BI_PASSWORD_SHA256 $*"\n'
    )
    stub.chmod(0o755)
    script = (CLICKHOUSE_DIR / "entrypoint.sh").read_text()
    assert "exec /entrypoint.sh " in script
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(script.replace("exec /entrypoint.sh ", f"exec {stub} "))
    env = {"PATH": "/usr/bin:/bin"}
    for var, content in (
        ("CLICKHOUSE_ADMIN_PASSWORD_FILE", "admin-secret\n"),
        ("CLICKHOUSE_WRITER_PASSWORD_FILE", "writer-secret"),
        ("CLICKHOUSE_BI_PASSWORD_FILE", "bi-secret\n"),
    ):
        (tmp_path / var).write_text(content)
        env[var] = str(tmp_path / var)
    out = subprocess.run(
        ["bash", str(wrapper), "--", "--x"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    want = [
        hashlib.sha256(p.encode()).hexdigest()
        for p in ("admin-secret", "writer-secret", "bi-secret")
    ]
    assert out.stdout.split() == [*want, "--", "--x"]
    assert "secret" not in out.stdout + out.stderr

    env["CLICKHOUSE_WRITER_PASSWORD_FILE"] = str(tmp_path / "missing")
    out = subprocess.run(["bash", str(wrapper)], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "missing or empty" in out.stderr and "pulse" in out.stderr


def test_migrations_run_once_as_the_admin_before_the_writers(compose: dict) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    env = migrate["environment"]
    assert migrate["entrypoint"] == ["python", "-m", "sinks.migrate"]
    assert env["PORTAL_PULSE_CLICKHOUSE_USER"] == ADMIN
    assert env["PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE"] == "/run/secrets/clickhouse_admin_password"
    assert migrate["secrets"] == ["clickhouse_admin_password"]
    assert migrate["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name, service in services.items():
        service_env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        if name != "migrate" and "PORTAL_PULSE_CLICKHOUSE_URL" in service_env:
            assert service_env["PORTAL_PULSE_CLICKHOUSE_USER"] == WRITER, name
            assert "clickhouse_admin_password" not in service.get("secrets", []), name
            assert service["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }, name
    grafana = yaml.safe_load(
        (ROOT / "docker/grafana/provisioning/datasources/clickhouse.yaml").read_text()
    )
    assert grafana["datasources"][0]["jsonData"]["username"] == BI


def test_deployment_doc_describes_the_users() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    assert "ClickHouse users and roles" in doc
    for word in (
        ADMIN,
        f"`{WRITER}`",
        f"`{BI}`",
        "python -m sinks.migrate",
        "SQL SECURITY DEFINER",
    ):
        assert word in doc, word
