"""SPEC §9 pseudonyms: HMAC-SHA256(key, practice:patient), 32 hex digits; key from env/file."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.pseudonym import MissingPseudonymKey, Pseudonymizer, load_key
from portal_pulse.settings import Settings

KEY_ENV = "PORTAL_PULSE_PSEUDONYM_KEY"
FILE_ENV = "PORTAL_PULSE_PSEUDONYM_KEY_FILE"


def expected(key: bytes, practice: str, patient: str) -> str:
    return hmac.new(key, f"{practice}:{patient}".encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)


def test_matches_spec_formula() -> None:
    key = b"test-key-not-a-secret"
    pseudonym = Pseudonymizer(key)
    assert pseudonym("practice-a", "MRN-000123") == expected(key, "practice-a", "MRN-000123")


@given(
    key=st.binary(min_size=1, max_size=64),
    practice=st.text(min_size=1, max_size=20),
    patient=st.text(min_size=1, max_size=20),
)
def test_matches_spec_formula_for_any_input(key: bytes, practice: str, patient: str) -> None:
    out = Pseudonymizer(key)(practice, patient)
    assert out == expected(key, practice, patient)
    assert re.fullmatch(r"[0-9a-f]{32}", out)


def test_deterministic_and_keyed() -> None:
    a, b = Pseudonymizer(b"key-one"), Pseudonymizer(b"key-two")
    assert a("p", "MRN-1") == a("p", "MRN-1")
    assert a("p", "MRN-1") != b("p", "MRN-1")


def test_different_practices_give_different_pseudonyms_for_the_same_patient() -> None:
    pseudonym = Pseudonymizer(b"k")
    assert pseudonym("practice-a", "MRN-1") != pseudonym("practice-b", "MRN-1")
    assert pseudonym("practice-a", "MRN-1") != pseudonym("practice-a", "MRN-2")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "env-secret")
    key = load_key(Settings())
    assert key == b"env-secret"
    assert Pseudonymizer(key)("p", "MRN-9") == expected(b"env-secret", "p", "MRN-9")


def test_key_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"file-secret\n")  # a trailing newline from an editor is not part of the key
    monkeypatch.setenv(FILE_ENV, str(path))
    assert load_key(Settings()) == b"file-secret"


def test_environment_key_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"file-secret")
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv(KEY_ENV, "env-secret")
    assert load_key(Settings()) == b"env-secret"


def test_empty_environment_key_falls_back_to_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"file-secret")
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv(KEY_ENV, "")
    assert load_key(Settings()) == b"file-secret"


def test_missing_key() -> None:
    with pytest.raises(MissingPseudonymKey, match=KEY_ENV):
        load_key(Settings())


def test_missing_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(FILE_ENV, str(tmp_path / "absent.key"))
    with pytest.raises(MissingPseudonymKey, match="does not exist"):
        load_key(Settings())


def test_empty_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "empty.key"
    path.write_bytes(b"  \n")
    monkeypatch.setenv(FILE_ENV, str(path))
    with pytest.raises(MissingPseudonymKey, match="empty"):
        load_key(Settings())


def test_empty_key_refused() -> None:
    with pytest.raises(MissingPseudonymKey):
        Pseudonymizer(b"")


def test_repr_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "super-secret-value")
    settings = Settings()
    pseudonym = Pseudonymizer(load_key(settings))
    assert "super-secret-value" not in repr(pseudonym)
    assert "super-secret-value" not in str(pseudonym)
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.safe_dump())
    assert not hasattr(pseudonym, "__dict__")  # only the slot, nothing that vars() would show
