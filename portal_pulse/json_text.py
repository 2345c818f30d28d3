"""JSON text for the per-event paths (state, changelogs, fingerprints), built without
``json.dumps``' per-call set-up.

``json.dumps`` with any keyword argument builds a new ``JSONEncoder`` on every call; at several
calls per event that was a few per cent of a worker. These encoders are built once and write
byte-for-byte what ``json.dumps`` writes with the same arguments, so nothing stored changes.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical", "canonical_record", "compact", "compact_bytes", "loads", "string"]

#: ``json.dumps(obj, separators=(",", ":"))``
compact = json.JSONEncoder(separators=(",", ":")).encode

#: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)``
canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode


_decode = json.JSONDecoder().decode


def loads(data: bytes) -> Any:
    """``json.loads(data)`` for the UTF-8 JSON the pipeline writes, without its encoding
    detection (a Python function run per call on ``bytes``)."""
    return _decode(data.decode("utf-8", "surrogatepass"))


def compact_bytes(obj: Any) -> bytes:
    """``json.dumps(obj, separators=(",", ":")).encode()``."""
    return compact(obj).encode()


def _plain(text: str) -> bool:
    """Text JSON writes as it is, only quoted (with or without ``ensure_ascii``)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def string(text: str) -> str:
    """``json.dumps(text)``: printable ASCII without a quote or backslash (every practice id and
    nearly every event id) is only quoted; anything else goes through the encoder."""
    if _plain(text):
        return f'"{text}"'
    return json.dumps(text)


_SCALARS = {True: "true", False: "false", None: "null"}


def canonical_record(head: tuple[str | int, ...], fields: dict[str, Any]) -> str:
    """``canonical([*head, fields])``. A flat record of plain strings, integers, booleans and
    nulls (every event's details so far) is written directly, at half the encoder's cost;
    anything else goes through the encoder."""
    parts = []
    for item in head:
        if type(item) is int:
            parts.append(str(item))
        elif type(item) is str and _plain(item):
            parts.append(f'"{item}"')
        else:
            return canonical([*head, fields])
    if not all(type(name) is str and _plain(name) for name in fields):
        return canonical([*head, fields])
    members = []
    for name in sorted(fields):
        value = fields[name]
        kind = type(value)
        if kind is str and _plain(value):
            members.append(f'"{name}":"{value}"')
        elif kind is int:
            members.append(f'"{name}":{value}')
        elif kind is bool or value is None:
            members.append(f'"{name}":{_SCALARS[value]}')
        else:
            return canonical([*head, fields])
    parts.append("{" + ",".join(members) + "}")
    return "[" + ",".join(parts) + "]"
