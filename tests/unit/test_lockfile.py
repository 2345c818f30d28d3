"""The locks CI and the image install from: every pin hashed, every declared dependency pinned
within its range, so a change to pyproject.toml without ``make lock`` fails here, not at install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\;]+)")


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    entries = re.split(r"\n(?=\S)", lock.read_text())
    for entry in entries:
        match = PIN.match(entry)
        if match is None:
            continue
        assert "--hash=sha256:" in entry, f"{lock.name}: {match.group(1)} is pinned without a hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    if extra:
        names += project["optional-dependencies"][extra]
    names += [
        line
        for line in (ROOT / "requirements" / "build.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [Requirement(text) for text in names]


@pytest.mark.parametrize(("lock", "extra"), [("test.lock", "test"), ("runtime.lock", None)])
def test_every_declared_dependency_is_pinned_with_hashes_in_its_range(
    lock: str, extra: str | None
) -> None:
    pins = _pins(ROOT / "requirements" / lock)
    for requirement in _declared(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {requirement.name} is not pinned; run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock}: {name}=={pins[name]} is outside {requirement.specifier}; run make lock"
        )


def test_the_runtime_lock_holds_no_test_tool() -> None:
    pins = _pins(ROOT / "requirements" / "runtime.lock")
    assert "pytest" not in pins
    assert "hypothesis" not in pins


def test_installs_go_through_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements/test.lock" in makefile
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.lock" in dockerfile
    for text in (makefile, dockerfile):
        for line in text.splitlines():
            # ``make lock``'s own tool venv is the one exception: it installs the locker.
            if "pip install" in line and "--require-hashes" not in line and "-lock/" not in line:
                assert "--no-deps" in line, f"an install that resolves dependencies: {line.strip()}"
