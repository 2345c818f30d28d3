"""The demo's throw-away pseudonym key: long enough, owner-only from its creation, never a link."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal_pulse.demo import ensure_demo_key
from portal_pulse.errors import UserError
from portal_pulse.pseudonym import MIN_KEY_BYTES, load_key
from portal_pulse.settings import Settings

KEY_ENV = "PORTAL_PULSE_PSEUDONYM_KEY"
FILE_ENV = "PORTAL_PULSE_PSEUDONYM_KEY_FILE"


@pytest.fixture(autouse=True)
def no_key_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty counts as unset; the teardown puts back whatever the demo sets."""
    monkeypatch.setenv(KEY_ENV, "")
    monkeypatch.setenv(FILE_ENV, "")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the mode is exactly what the file was created with."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def test_the_demo_key_is_created_owner_only_and_long_enough(
    tmp_path: Path, open_umask: None
) -> None:
    key_file = ensure_demo_key(tmp_path / "var")
    assert key_file == tmp_path / "var" / "demo-pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert os.environ[FILE_ENV] == str(key_file.resolve())
    key = load_key(Settings())
    assert len(key) >= MIN_KEY_BYTES
    assert key == key_file.read_bytes()


def test_an_earlier_demo_key_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_demo_key(tmp_path)
    assert first is not None
    key = first.read_bytes()
    monkeypatch.setenv(FILE_ENV, "")
    assert ensure_demo_key(tmp_path) == first
    assert first.read_bytes() == key, "pseudonyms from the last demo stay comparable"


def test_a_link_in_the_key_file_place_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("someone else's file")
    (tmp_path / "demo-pseudonym.key").symlink_to(target)
    with pytest.raises(UserError, match="not a regular file"):
        ensure_demo_key(tmp_path)
    assert target.read_text() == "someone else's file"
    assert os.environ[FILE_ENV] == ""


def test_a_dangling_link_is_not_followed_to_create_a_file(tmp_path: Path) -> None:
    target = tmp_path / "created-through-the-link"
    (tmp_path / "demo-pseudonym.key").symlink_to(target)
    with pytest.raises(UserError):
        ensure_demo_key(tmp_path)
    assert not target.exists()


def test_a_configured_key_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k" * MIN_KEY_BYTES)
    assert ensure_demo_key(tmp_path) is None
    assert not (tmp_path / "demo-pseudonym.key").exists()
