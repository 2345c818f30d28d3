"""SPEC §9 pseudonyms: HMAC-SHA256(key, practice:patient), 32 hex digits; a key of at least 32
bytes from env/file."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal_pulse.pseudonym import (
    MIN_KEY_BYTES,
    MissingPseudonymKey,
    Pseudonymizer,
    ShortPseudonymKey,
    load_key,
)
from portal_pulse.settings import Settings

KEY_ENV = "PORTAL_PULSE_PSEUDONYM_KEY"
FILE_ENV = "PORTAL_PULSE_PSEUDONYM_KEY_FILE"
ENV_SECRET = "env-secret-not-a-real-one-32-bytes"
FILE_SECRET = "file-secret-not-a-real-one-32-bytes"


def expected(key: bytes, practice: str, patient: str) -> str:
    return hmac.new(key, f"{practice}:{patient}".encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)


def test_matches_spec_formula() -> None:
    key = b"test-key-not-a-secret-at-least-32-bytes"
    pseudonym = Pseudonymizer(key)
    assert pseudonym("practice-a", "MRN-000123") == expected(key, "practice-a", "MRN-000123")


@given(
    key=st.binary(min_size=MIN_KEY_BYTES, max_size=64),
    practice=st.text(min_size=1, max_size=20),
    patient=st.text(min_size=1, max_size=20),
)
def test_matches_spec_formula_for_any_input(key: bytes, practice: str, patient: str) -> None:
    out = Pseudonymizer(key)(practice, patient)
    assert out == expected(key, practice, patient)
    assert re.fullmatch(r"[0-9a-f]{32}", out)


def test_deterministic_and_keyed() -> None:
    a, b = Pseudonymizer(b"key-one" * 5), Pseudonymizer(b"key-two" * 5)
    assert a("p", "MRN-1") == a("p", "MRN-1")
    assert a("p", "MRN-1") != b("p", "MRN-1")


def test_different_practices_give_different_pseudonyms_for_the_same_patient() -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    assert pseudonym("practice-a", "MRN-1") != pseudonym("practice-b", "MRN-1")
    assert pseudonym("practice-a", "MRN-1") != pseudonym("practice-a", "MRN-2")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, ENV_SECRET)
    key = load_key(Settings())
    assert key == ENV_SECRET.encode()
    assert Pseudonymizer(key)("p", "MRN-9") == expected(ENV_SECRET.encode(), "p", "MRN-9")


def test_key_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(FILE_SECRET.encode() + b"\n")  # an editor's newline is not part of the key
    monkeypatch.setenv(FILE_ENV, str(path))
    assert load_key(Settings()) == FILE_SECRET.encode()


def test_environment_key_wins_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(FILE_SECRET.encode())
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv(KEY_ENV, ENV_SECRET)
    assert load_key(Settings()) == ENV_SECRET.encode()


def test_empty_environment_key_falls_back_to_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(FILE_SECRET.encode())
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv(KEY_ENV, "")
    assert load_key(Settings()) == FILE_SECRET.encode()


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
    monkeypatch.setenv(KEY_ENV, "super-secret-value-of-32-bytes-or-more")
    settings = Settings()
    pseudonym = Pseudonymizer(load_key(settings))
    assert "super-secret-value-of-32-bytes-or-more" not in repr(pseudonym)
    assert "super-secret-value-of-32-bytes-or-more" not in str(pseudonym)
    assert "super-secret-value-of-32-bytes-or-more" not in repr(settings)
    assert "super-secret-value-of-32-bytes-or-more" not in str(settings.safe_dump())
    assert not hasattr(pseudonym, "__dict__")  # only the slot, nothing that vars() would show


# -- short keys (SPEC §9: at least 32 bytes) -----------------------------------------------------


def _one_line_advice(message: str) -> None:
    assert "\n" not in message
    assert "at least 32" in message
    assert "openssl rand -hex 32" in message


@pytest.mark.parametrize("key", ["k", "x" * (MIN_KEY_BYTES - 1)])
def test_short_environment_key_is_refused(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv(KEY_ENV, key)
    with pytest.raises(ShortPseudonymKey) as info:
        load_key(Settings())
    message = str(info.value)
    _one_line_advice(message)
    assert KEY_ENV in message and f"is {len(key)} bytes" in message
    assert isinstance(info.value, MissingPseudonymKey), "the CLI reports it as a user error"


def test_short_key_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"short-key\n")
    monkeypatch.setenv(FILE_ENV, str(path))
    with pytest.raises(ShortPseudonymKey) as info:
        load_key(Settings())
    message = str(info.value)
    _one_line_advice(message)
    assert str(path) in message and "is 9 bytes" in message
    assert "short-key" not in message, "the key itself is never shown"


def test_a_short_environment_key_is_refused_even_with_a_good_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(FILE_SECRET.encode())
    monkeypatch.setenv(FILE_ENV, str(path))
    monkeypatch.setenv(KEY_ENV, "k")
    with pytest.raises(ShortPseudonymKey, match=KEY_ENV):
        load_key(Settings())


def test_exactly_32_bytes_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "x" * MIN_KEY_BYTES)
    assert len(load_key(Settings())) == MIN_KEY_BYTES
    # 32 bytes, not 32 characters: 11 three-byte characters are 33 bytes.
    monkeypatch.setenv(KEY_ENV, "€" * 11)
    assert len(load_key(Settings())) == 33
    monkeypatch.setenv(KEY_ENV, "€" * 10)
    with pytest.raises(ShortPseudonymKey, match="is 30 bytes"):
        load_key(Settings())


@pytest.mark.parametrize("key", [b"k", b"x" * (MIN_KEY_BYTES - 1)])
def test_pseudonymizer_refuses_a_short_key_however_it_is_made(key: bytes) -> None:
    with pytest.raises(ShortPseudonymKey) as info:
        Pseudonymizer(key)
    _one_line_advice(str(info.value))
