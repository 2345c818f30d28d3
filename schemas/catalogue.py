"""The event catalogue (SPEC §2), read once from the ``.avsc`` files so the schemas stay the one source."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema

__all__ = [
    "AVRO_DIR",
    "EventType",
    "FieldSpec",
    "event_types",
    "load_named_schema",
    "source_of",
]

AVRO_DIR = Path(__file__).with_name("avro")
NAMESPACE = "portalpulse"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One type-specific field: its Avro kind, the enum symbols if any, and whether it may be absent."""

    name: str
    kind: str  # string | long | int | boolean | enum
    symbols: tuple[str, ...] = ()
    optional: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class EventType:
    name: str  # dotted, e.g. "message.sent"
    record: str  # Avro full name, e.g. "portalpulse.MessageSent"
    fields: tuple[FieldSpec, ...]


def _field_spec(raw: dict[str, Any]) -> FieldSpec:
    typ = raw["type"]
    optional = "default" in raw
    if isinstance(typ, list):  # ["null", X]
        typ = next(t for t in typ if t != "null")
        optional = True
    if isinstance(typ, dict) and typ.get("type") == "enum":
        return FieldSpec(raw["name"], "enum", tuple(typ["symbols"]), optional, raw.get("default"))
    return FieldSpec(raw["name"], str(typ), (), optional, raw.get("default"))


@cache
def event_types() -> dict[str, EventType]:
    """Map dotted event type → its spec, from every ``.avsc`` that declares ``event_type``."""
    out: dict[str, EventType] = {}
    for path in sorted(AVRO_DIR.glob(f"{NAMESPACE}.*.avsc")):
        raw = json.loads(path.read_text())
        if "event_type" not in raw:
            continue
        fields = tuple(_field_spec(f) for f in raw["fields"])
        out[raw["event_type"]] = EventType(raw["event_type"], f"{NAMESPACE}.{raw['name']}", fields)
    return out


@cache
def load_named_schema(name: str) -> Schema:
    """Parse ``portalpulse.<name>.avsc`` with its referenced named types, once per process."""
    return fastavro.schema.load_schema(AVRO_DIR / f"{NAMESPACE}.{name}.avsc")


# Which raw topic a producer writes an event type to (SPEC §2 "source" column).
_SOURCE_OF = {
    "patient.seen": "ehr",
    "result.posted": "ehr",
    "result.staff_contacted": "ehr",
    "appointment.booked": "ehr",
    "payment.made": "billing",
    "phone.call": "phone",
    "survey.response": "survey",
}


def source_of(event_type: str | None) -> str:
    """Raw topic suffix for an event type; unknown types go to the portal topic (and dead-letter)."""
    return _SOURCE_OF.get(event_type or "", "portal")
