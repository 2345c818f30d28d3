"""PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE: the ClickHouse password from a secret file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from portal_pulse.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORTAL_PULSE_CLICKHOUSE_PASSWORD", "PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_password_is_read_from_the_file_without_its_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "clickhouse_password"
    secret.write_text("s3cret value\n")
    monkeypatch.setenv("PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.clickhouse_password is not None
    assert settings.clickhouse_password.get_secret_value() == "s3cret value"
    # Masked like any password; the file's path is not a secret.
    dumped = settings.safe_dump()
    assert dumped["clickhouse_password"] == "**********"
    assert "s3cret" not in str(dumped)


def test_a_password_given_directly_wins_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "clickhouse_password"
    secret.write_text("from-file")
    monkeypatch.setenv("PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("PORTAL_PULSE_CLICKHOUSE_PASSWORD", "from-env")
    password = Settings().clickhouse_password
    assert password is not None and password.get_secret_value() == "from-env"


def test_no_file_no_password() -> None:
    assert Settings().clickhouse_password is None


def test_a_missing_file_is_a_setting_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PORTAL_PULSE_CLICKHOUSE_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ValidationError) as info:
        Settings()
    assert info.value.errors()[0]["loc"] == ("clickhouse_password_file",)
