"""The Kafka ACL rules (portal_pulse/kafka_acls.py): who may write which topic."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal_pulse.errors import UserError
from portal_pulse.kafka_acls import (
    LOADER,
    PIPELINE,
    PRINCIPALS,
    acl_rules,
    main,
    password_file,
    read_passwords,
)
from portal_pulse.settings import SOURCES, Settings

SETTINGS = Settings(topic_prefix="hosp", app_id="pp")


def _writers(topic: str) -> set[str]:
    return {
        r.user
        for r in acl_rules(SETTINGS)
        if r.resource == "topic" and r.operation == "WRITE" and r.pattern == "literal"
        and r.name == topic
    }  # fmt: skip


def test_each_source_writes_only_its_raw_topic() -> None:
    rules = acl_rules(SETTINGS)
    for source in SOURCES:
        mine = [r for r in rules if r.user == source]
        assert [(r.resource, r.name, r.operation, r.pattern) for r in mine] == [
            ("topic", f"hosp.raw.{source}", "WRITE", "literal")
        ]
        assert _writers(f"hosp.raw.{source}") == {source, LOADER}


def test_only_the_pipeline_writes_or_reads_internal_topics() -> None:
    names = SETTINGS.topics
    for topic in (
        names.clean,
        names.dead_letter,
        names.alerts,
        names.responses,
        names.live_metrics,
    ):
        assert _writers(topic) == {PIPELINE}, topic
    others = [r for r in acl_rules(SETTINGS) if r.user != PIPELINE]
    assert {r.operation for r in others} == {"WRITE"}
    assert all(".raw." in r.name for r in others)
    # The pipeline reads the raw topics but never writes them.
    raw = [r for r in acl_rules(SETTINGS) if r.user == PIPELINE and ".raw." in r.name]
    assert raw and "WRITE" not in {r.operation for r in raw}


def test_the_pipeline_owns_its_groups_and_the_apps_own_topics() -> None:
    rules = [r for r in acl_rules(SETTINGS) if r.user == PIPELINE]
    groups = {(r.name, r.pattern) for r in rules if r.resource == "group"}
    assert groups == {
        ("pp", "literal"),
        ("pp-sink", "literal"),
        ("pp-restore", "literal"),
        ("pp-standby", "literal"),
    }
    prefixed = {(r.name, r.operation) for r in rules if r.pattern == "prefixed"}
    assert ("pp-", "WRITE") in prefixed and ("pp-", "CREATE") in prefixed
    assert {r.name for r in rules if r.pattern == "prefixed"} == {"pp-"}
    assert not [r for r in acl_rules(SETTINGS) if r.resource not in ("topic", "group")]


def test_passwords_come_from_one_file_per_principal(tmp_path: Path) -> None:
    for user in PRINCIPALS:
        password_file(tmp_path, user).write_text(f"{user}-pw\n")
    assert read_passwords(tmp_path) == {u: f"{u}-pw" for u in PRINCIPALS}
    password_file(tmp_path, "survey").write_text("")
    with pytest.raises(UserError, match="kafka_survey_password is empty"):
        read_passwords(tmp_path)
    password_file(tmp_path, "ehr").unlink()
    with pytest.raises(UserError, match="password of ehr"):
        read_passwords(tmp_path)


def test_print_lists_the_rules_without_a_broker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTAL_PULSE_TOPIC_PREFIX", "hosp")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["--print"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "User:portal WRITE topic:hosp.raw.portal" in out
    assert len(out) == len(acl_rules(Settings(topic_prefix="hosp")))


def test_apply_without_a_broker_address_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("PORTAL_PULSE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["--passwords-dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KAFKA_BOOTSTRAP_SERVERS" in err
