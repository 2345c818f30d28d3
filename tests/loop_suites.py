"""Run the fault and roles suites N times in a row with no rerun, and print how each run went.

    python tests/loop_suites.py --runs 20                 # both suites, 20 rounds
    python tests/loop_suites.py --runs 5 --under-load     # every core busy (PORTAL_PULSE_TEST_CPU_LOAD=1)
    python tests/loop_suites.py --runs 3 --suites fault   # one suite

Issue #18 asks that these suites pass 20 times in a row without ``pytest-rerunfailures``
hiding a failure, so each run is its own pytest process with that plugin disabled. Per run it
prints the suite, PASS/FAIL, the passed/failed counts and the wall time; at the end, per suite,
the passes, failures, median and max duration and which tests failed how often. It exits 1 if
any run failed (130 if interrupted). Each run's full output and JUnit XML stay in ``--log-dir``.
A script, not a test: timings are printed figures, never asserted (docs/testing.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {
    "fault": "tests/integration/test_fault_injection.py",
    "roles": "tests/integration/test_roles.py",
}
# The per-test timeout of pyproject.toml (600 s) is a liveness bound; every core busy stretches
# it as the suites stretch their own (tests/integration/conftest.py, LIVENESS_SCALE).
LOADED_TEST_TIMEOUT = 1800


@dataclass
class Run:
    suite: str
    index: int
    exit_code: int
    seconds: float
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Passed only if pytest says so and at least one test ran (all skipped is no evidence)."""
        return self.exit_code == 0 and self.failed == 0 and self.passed > 0


def addopts_without_strict_markers() -> str:
    """pyproject's addopts less ``--strict-markers``: with pytest-rerunfailures disabled its
    ``flaky`` marker is unregistered, which strict markers would turn into a collection error."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    addopts = config["tool"]["pytest"]["ini_options"].get("addopts", "")
    kept = [a for a in shlex.split(addopts) if a != "--strict-markers"]
    return shlex.join(kept)


def pytest_command(
    path: str, junit: Path, *, under_load: bool, basetemp: Path | None = None
) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", path,
        "-p", "no:rerunfailures",  # no rerun, whatever flaky(reruns=…) markers say
        "-o", f"addopts={addopts_without_strict_markers()}",
        "-W", "ignore::pytest.PytestUnknownMarkWarning",
        "-p", "no:cacheprovider",
        "-s",  # the suites' own figures (time to recover, counts vs replay) go to the log
        f"--junitxml={junit}",
    ]  # fmt: skip
    if under_load:
        command += ["-o", f"timeout={LOADED_TEST_TIMEOUT}"]
    if basetemp is not None:
        command.append(f"--basetemp={basetemp}")
    return command


def read_junit(path: Path, run: Run) -> None:
    """Counts and failed test ids from pytest's JUnit XML (absent if pytest never got that far)."""
    if not path.exists():
        return
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            run.failed += 1
            run.failures.append(name)
        elif case.find("skipped") is not None:
            run.skipped += 1
        else:
            run.passed += 1


def run_once(suite: str, index: int, log_dir: Path, *, under_load: bool) -> Run:
    stem = log_dir / f"{suite}-{index:03d}"
    junit = stem.with_suffix(".xml")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if under_load:
        env["PORTAL_PULSE_TEST_CPU_LOAD"] = "1"
    else:
        env.pop("PORTAL_PULSE_TEST_CPU_LOAD", None)
    # The run's workers' logs and databases: kept when it fails (what it left is the evidence),
    # removed when it passes.
    basetemp = stem.with_name(stem.name + "-tmp")
    began = time.monotonic()
    with open(stem.with_suffix(".log"), "wb") as log:
        code = subprocess.call(
            pytest_command(SUITES[suite], junit, under_load=under_load, basetemp=basetemp),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    run = Run(suite, index, code, time.monotonic() - began)
    read_junit(junit, run)
    if run.ok:
        shutil.rmtree(basetemp, ignore_errors=True)
    return run


def describe(run: Run, runs: int) -> str:
    verdict = "PASS" if run.ok else "FAIL"
    counts = f"{run.passed} passed, {run.failed} failed"
    if run.skipped:
        counts += f", {run.skipped} skipped"
    if run.exit_code not in (0, 1):
        counts += f" (pytest exit {run.exit_code})"
    line = f"run {run.index:>3}/{runs}  {run.suite:<6} {verdict}  {counts:<32} {run.seconds:7.1f} s"
    for name in run.failures:
        line += f"\n    failed: {name}"
    return line


def summary(results: list[Run], suites: list[str]) -> str:
    lines = ["", "summary"]
    for suite in suites:
        mine = [r for r in results if r.suite == suite]
        if not mine:
            continue
        seconds = [r.seconds for r in mine]
        passes = sum(r.ok for r in mine)
        lines.append(
            f"  {suite:<6} {len(mine)} runs: {passes} passed, {len(mine) - passes} failed; "
            f"duration median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s"
        )
        failed = Counter(name for r in mine for name in r.failures)
        for name, n in failed.most_common():
            lines.append(f"    {n}× {name}")
        broken = [r.index for r in mine if not r.ok and not r.failures]
        if broken:
            lines.append(f"    runs with no failed test but no pass either: {broken}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds (default 20)")
    parser.add_argument(
        "--suites",
        default="fault,roles",
        help="comma-separated, from: " + ", ".join(SUITES) + " (default both)",
    )
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="every core busy during the suites (PORTAL_PULSE_TEST_CPU_LOAD=1)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="where each run's log and JUnit XML go (default var/loops/…)"
    )
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        parser.error(f"unknown suite {', '.join(unknown) or '(none)'}; known: {', '.join(SUITES)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = args.log_dir or ROOT / "var" / "loops" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    load = " under load (every core busy)" if args.under_load else ""
    print(f"{args.runs} rounds of {', '.join(suites)}{load}, no reruns; logs in {log_dir}")

    results: list[Run] = []
    try:
        for index in range(1, args.runs + 1):
            for suite in suites:
                run = run_once(suite, index, log_dir, under_load=args.under_load)
                results.append(run)
                print(describe(run, args.runs), flush=True)
    except KeyboardInterrupt:
        print(summary(results, suites))
        print("interrupted")
        return 130
    print(summary(results, suites))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
