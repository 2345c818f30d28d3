"""Patient pseudonyms (SPEC §9): the only form of a patient identifier past ingest."""

from __future__ import annotations

import hmac
from pathlib import Path

from portal_pulse.settings import Settings

__all__ = ["MIN_KEY_BYTES", "MissingPseudonymKey", "Pseudonymizer", "ShortPseudonymKey", "load_key"]

MIN_KEY_BYTES = 32  # SPEC §9; HMAC-SHA256's own output size: a shorter key is guessable sooner
_MAKE_ONE = "make one with `openssl rand -hex 32`"


class MissingPseudonymKey(RuntimeError):
    """No usable key is configured: pseudonyms must never come from a key in code."""


class ShortPseudonymKey(MissingPseudonymKey):
    """A key shorter than ``MIN_KEY_BYTES``: one that can be guessed is no key."""


def _checked(key: bytes, source: str = "") -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ShortPseudonymKey(
            f"the pseudonym key{source} is {len(key)} bytes; at least {MIN_KEY_BYTES} are "
            f"needed: {_MAKE_ONE}"
        )
    return key


def load_key(settings: Settings) -> bytes:
    """The key from ``PORTAL_PULSE_PSEUDONYM_KEY``, else from the file it names in
    ``PORTAL_PULSE_PSEUDONYM_KEY_FILE`` (surrounding whitespace dropped); at least 32 bytes."""
    if settings.pseudonym_key is not None and settings.pseudonym_key.get_secret_value():
        key = settings.pseudonym_key.get_secret_value().encode()
        return _checked(key, " in PORTAL_PULSE_PSEUDONYM_KEY")
    if settings.pseudonym_key_file is not None:
        path = Path(settings.pseudonym_key_file)
        if not path.is_file():
            raise MissingPseudonymKey(f"pseudonym key file {path} does not exist")
        key = path.read_bytes().strip()
        if not key:
            raise MissingPseudonymKey(f"pseudonym key file {path} is empty: {_MAKE_ONE}")
        return _checked(key, f" in {path}")
    raise MissingPseudonymKey(
        "no pseudonym key: set PORTAL_PULSE_PSEUDONYM_KEY or PORTAL_PULSE_PSEUDONYM_KEY_FILE "
        f"({_MAKE_ONE})"
    )


class Pseudonymizer:
    """HMAC-SHA256(key, practice_id:patient_id), first 32 hex digits.

    The input is unambiguous because a practice id cannot hold ":" (SPEC §2), which
    ``schemas.validation`` enforces before any event gets here.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            raise MissingPseudonymKey("empty pseudonym key")
        self._key = _checked(key)

    def __call__(self, practice_id: str, patient_id: str) -> str:
        msg = f"{practice_id}:{patient_id}".encode()
        return hmac.digest(self._key, msg, "sha256").hex()[:32]  # one call: OpenSSL's one-shot

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"
