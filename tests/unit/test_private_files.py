"""The data directory and chDB store are the worker's user's alone (issue #21)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portal_pulse.errors import UserError
from portal_pulse.private_files import private_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_directory_is_created_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        made = private_dir(tmp_path / "var" / "chdb")
    finally:
        os.umask(old)
    assert _mode(made) == 0o700


def test_an_open_directory_is_narrowed_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wide = tmp_path / "var"
    wide.mkdir()
    wide.chmod(0o755)
    private_dir(wide)
    assert _mode(wide) == 0o700
    assert "narrowed" in caplog.text and "755" in caplog.text


def test_a_link_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)  # whatever the process umask (the CLI's own is 077)
    (tmp_path / "var").symlink_to(target)
    with pytest.raises(UserError, match="not a directory"):
        private_dir(tmp_path / "var")
    assert _mode(target) == 0o755


def test_the_cli_creates_private_files(tmp_path: Path) -> None:
    """``simulate`` runs under the CLI's umask 077: its recording is 0600 whatever the shell's."""
    out = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "portal_pulse.cli", "simulate", "--practices", "1",
         "--patients", "3", "--months", "1", "--out", str(out)],
        capture_output=True, text=True, check=False, timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _mode(out) == 0o600
