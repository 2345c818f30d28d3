"""JSON text for the per-event paths (state, changelogs, fingerprints), built without
``json.dumps``' per-call set-up.

``json.dumps`` with any keyword argument builds a new ``JSONEncoder`` on every call; at several
calls per event that was a few per cent of a worker. These encoders are built once and write
byte-for-byte what ``json.dumps`` writes with the same arguments, so nothing stored changes.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical", "compact", "compact_bytes", "string"]

#: ``json.dumps(obj, separators=(",", ":"))``
compact = json.JSONEncoder(separators=(",", ":")).encode

#: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)``
canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


def compact_bytes(obj: Any) -> bytes:
    """``json.dumps(obj, separators=(",", ":")).encode()``."""
    return compact(obj).encode()


def string(text: str) -> str:
    """``json.dumps(text)``: printable ASCII without a quote or backslash (every practice id and
    nearly every event id) is only quoted; anything else goes through the encoder."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)
