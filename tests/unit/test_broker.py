"""The native broker (portal_pulse/broker.py): its KRaft cluster id, its config, its files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

from portal_pulse.broker import SUPER_USER, LocalBroker, _kraft_id
from portal_pulse.private_files import private_dir, write_private


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = [_kraft_id(f"seed-{i}") for i in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert any(i.startswith("A") for i in ids)  # the seeds include ids that began with '-'


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_files_are_0600_and_never_written_through_a_link(tmp_path: Path) -> None:
    old = os.umask(0o022)  # as a shell would leave it: the mode must not depend on it
    try:
        target = tmp_path / "elsewhere"
        target.write_text("untouched")
        link = tmp_path / "server.properties"
        link.symlink_to(target)
        write_private(link, "secret=1\n")
        assert target.read_text() == "untouched"
        assert not link.is_symlink() and link.read_text() == "secret=1\n"
        assert _mode(link) == 0o600
        write_private(link, "secret=2\n")  # replaced, not appended
        assert link.read_text() == "secret=2\n" and _mode(link) == 0o600
    finally:
        os.umask(old)


def test_server_properties_with_acls_is_private_and_locks_the_broker_down(tmp_path: Path) -> None:
    """The config (it holds the admin password) is 0600 in a 0700 home; under ``acls`` every
    listener wants SASL and the authorizer denies what no ACL allows."""
    old = os.umask(0o022)
    try:
        home = tmp_path / "kafka"
        broker = LocalBroker(home, port=1, controller_port=2, acls=True)
        private_dir(home)
        (home / "data").mkdir(mode=0o700)
        (home / "data" / "meta.properties").write_text("")  # formatted already: no java here
        cfg = broker._write_config()
    finally:
        os.umask(old)
    assert _mode(home) == 0o700 and _mode(cfg) == 0o600
    props = dict(line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line)
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == f"User:{SUPER_USER}"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.security.protocol.map"] == (
        "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert "SCRAM-SHA-512" in props["sasl.enabled.mechanisms"]
    assert broker.admin_password in props["listener.name.controller.plain.sasl.jaas.config"]
    assert broker.admin_config()["sasl.username"] == SUPER_USER
