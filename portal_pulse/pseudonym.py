"""Patient pseudonyms (SPEC §9): the only form of a patient identifier past ingest."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from portal_pulse.settings import Settings

__all__ = ["MissingPseudonymKey", "Pseudonymizer", "load_key"]


class MissingPseudonymKey(RuntimeError):
    """Raised when no key is configured: pseudonyms must never come from a key in code."""


def load_key(settings: Settings) -> bytes:
    if settings.pseudonym_key is not None and settings.pseudonym_key.get_secret_value():
        return settings.pseudonym_key.get_secret_value().encode()
    if settings.pseudonym_key_file is not None:
        path = Path(settings.pseudonym_key_file)
        if not path.is_file():
            raise MissingPseudonymKey(f"pseudonym key file {path} does not exist")
        key = path.read_bytes().strip()
        if key:
            return key
        raise MissingPseudonymKey(f"pseudonym key file {path} is empty")
    raise MissingPseudonymKey(
        "no pseudonym key: set PORTAL_PULSE_PSEUDONYM_KEY or PORTAL_PULSE_PSEUDONYM_KEY_FILE"
    )


class Pseudonymizer:
    """HMAC-SHA256(key, practice_id:patient_id), first 32 hex digits."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            raise MissingPseudonymKey("empty pseudonym key")
        self._key = key

    def __call__(self, practice_id: str, patient_id: str) -> str:
        msg = f"{practice_id}:{patient_id}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"
