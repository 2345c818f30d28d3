"""tests/loop_suites.py: its pytest command really runs without reruns, and it reads and sums
runs as pytest reported them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.loop_suites import Run, pytest_command, read_junit, summary

SAMPLE = """
import pathlib
import pytest

CALLS = pathlib.Path(__file__).with_name("calls.txt")


@pytest.mark.flaky(reruns=2)
def test_fails_every_time():
    with CALLS.open("a") as fh:
        fh.write("call\\n")
    assert False, "always"


def test_passes():
    pass


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
"""


def _sample(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "test_sample.py"
    path.write_text(SAMPLE)
    return path, tmp_path / "calls.txt"


def test_the_loop_command_runs_a_flaky_test_once(tmp_path: Path) -> None:
    path, calls = _sample(tmp_path)
    junit = tmp_path / "out.xml"
    code = subprocess.call(
        pytest_command(str(path), junit, under_load=False),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert calls.read_text().count("call") == 1, "no rerun under the loop's command"
    run = Run("fault", 1, code, 1.0)
    read_junit(junit, run)
    assert (run.exit_code, run.passed, run.failed, run.skipped) == (1, 1, 1, 1)
    assert run.failures == ["test_sample::test_fails_every_time"]
    assert not run.ok


def test_plain_pytest_would_have_rerun_it(tmp_path: Path) -> None:
    """The control: the plugin the loop turns off is installed and does rerun this test."""
    path, calls = _sample(tmp_path)
    subprocess.call(
        [sys.executable, "-m", "pytest", str(path), "-p", "no:cacheprovider"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert calls.read_text().count("call") == 3


def test_a_run_without_a_passed_test_is_no_pass(tmp_path: Path) -> None:
    assert not Run("roles", 1, 0, 1.0, passed=0, skipped=5).ok
    assert not Run("roles", 1, 2, 1.0).ok  # interrupted or a collection error: no JUnit counts
    read_junit(tmp_path / "missing.xml", run := Run("roles", 1, 4, 1.0))
    assert (run.passed, run.failed, run.ok) == (0, 0, False)
    assert Run("roles", 1, 0, 1.0, passed=5).ok


def test_summary_per_suite() -> None:
    runs = [
        Run("fault", 1, 0, 10.0, passed=7),
        Run("roles", 1, 0, 50.0, passed=5),
        Run("fault", 2, 1, 30.0, passed=6, failed=1, failures=["m::test_kill"]),
        Run("fault", 3, 0, 20.0, passed=7),
    ]
    text = summary(runs, ["fault", "roles"])
    assert "fault  3 runs: 2 passed, 1 failed; duration median 20.0 s, max 30.0 s" in text
    assert "1× m::test_kill" in text
    assert "roles  1 runs: 1 passed, 0 failed; duration median 50.0 s, max 50.0 s" in text
