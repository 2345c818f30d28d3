"""Checks an event in the flat SPEC §2 shape (envelope plus type fields) against the catalogue.

The same checks serve JSON Lines files, JSON on the raw topics and decoded Avro, so an event is
accepted or refused for the same reason wherever it enters.

Every message names the field and what was expected, never the value received: a patient id
typed into the wrong field must not reach a dead letter's ``detail``, ClickHouse or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.catalogue import FieldSpec, event_types
from schemas.model import RawEvent

__all__ = [
    "MAX_DETAIL_LENGTH",
    "MAX_IDENTIFIER_LENGTH",
    "MAX_PRACTICE_ID_LENGTH",
    "PRACTICE_ID_RULE",
    "InvalidEvent",
    "TimeBounds",
    "bounded",
    "is_identifier_field",
    "is_practice_id",
    "parse_instant",
    "validate_event",
]

ENVELOPE = ("event_id", "event_type", "occurred_at", "practice_id", "patient_id")
MAX_IDENTIFIER_LENGTH = 256  # ids become Kafka keys and ClickHouse keys: no room for a payload
MAX_DETAIL_LENGTH = 300
MAX_PRACTICE_ID_LENGTH = 64
PRACTICE_ID_RULE = f"1 to {MAX_PRACTICE_ID_LENGTH} letters, digits, '.', '_' or '-'"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# SPEC §2. ASCII only: no look-alike letters, and never ':' (the pseudonym's separator, SPEC §9),
# '|' (the clean key's), a quote or a space (a practice id ends up in SQL, YAML and log lines).
_PRACTICE_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_PRACTICE_ID_LENGTH}}}")


def is_practice_id(value: object) -> bool:
    """Whether ``value`` is a practice id SPEC §2 allows: events and the practices file alike."""
    return isinstance(value, str) and _PRACTICE_ID.fullmatch(value) is not None


def bounded(text: str, limit: int = MAX_DETAIL_LENGTH) -> str:
    """``text`` cut to ``limit`` characters, so no message can grow with its input."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_identifier_field(name: str) -> bool:
    """Every ``*_id`` field (envelope or type-specific) is an identifier, checked the same way."""
    return name.endswith("_id")


class InvalidEvent(ValueError):
    """An event the pipeline refuses; ``reason`` is a stable code, ``field`` names the culprit."""

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        detail = bounded(detail)
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far from the wall clock an ``occurred_at`` may be before it is absurd."""

    max_future: timedelta = timedelta(minutes=5)  # SPEC §7's small skew
    max_past: timedelta = timedelta(days=3650)

    def check(self, at: datetime, now: datetime) -> None:
        if at > now + self.max_future:
            raise InvalidEvent(
                "timestamp_out_of_range",
                f"occurred_at is more than {_span(self.max_future)} in the future",
                "occurred_at",
            )
        if at < now - self.max_past:
            raise InvalidEvent(
                "timestamp_out_of_range",
                f"occurred_at is more than {_span(self.max_past)} in the past",
                "occurred_at",
            )


def _span(delta: timedelta) -> str:
    """A bound in words ("1 day", "90 seconds"): the message states the limit, not the value."""
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" + ("s" if n != 1 else "")
    return f"{seconds} seconds"


def parse_instant(value: Any, field: str = "occurred_at") -> datetime:
    """ISO-8601 with an explicit offset (or an aware datetime) → aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidEvent("bad_timestamp", f"{field} has no time zone offset", field)
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{field} must be an ISO-8601 string", field)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(
            "bad_timestamp", f"{field} is not an ISO-8601 instant with an offset", field
        ) from None
    if parsed.tzinfo is None:
        raise InvalidEvent("bad_timestamp", f"{field} has no UTC offset", field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InvalidEvent(
            "bad_timestamp", f"{field} is outside the years 1..9999 in UTC", field
        ) from None


def _check_identifier(name: str, value: str) -> None:
    """Ids are keys (Kafka, ClickHouse, the pseudonym): printable, one line, of sane length.

    ``isprintable`` refuses NUL and every other control character, lone surrogates (which
    cannot be encoded as UTF-8) and invisible format characters.
    """
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidEvent(
            "identifier_too_long", f"{name} is longer than {MAX_IDENTIFIER_LENGTH} characters", name
        )
    if not value.isprintable():
        raise InvalidEvent(
            "bad_identifier", f"{name} contains control or non-printable characters", name
        )


def _check_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string", name)
    if not value.strip():
        raise InvalidEvent("empty_field", f"{name} is empty", name)
    if is_identifier_field(name):
        _check_identifier(name, value)
    return value


def _required_string(obj: Mapping[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", f"missing required field {name}", name)
    return _check_string(name, obj[name])


def _check_field(spec: FieldSpec, obj: Mapping[str, Any]) -> Any:
    name = spec.name
    if name not in obj or obj[name] is None:
        if spec.optional:
            return spec.default
        raise InvalidEvent("missing_field", f"missing required field {name}", name)
    value = obj[name]
    if spec.kind == "enum":
        if not isinstance(value, str) or value not in spec.symbols:
            allowed = ", ".join(spec.symbols)
            raise InvalidEvent("bad_enum", f"{name} must be one of {allowed}", name)
    elif spec.kind == "string":
        _check_string(name, value)
    elif spec.kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent("wrong_type", f"{name} must be an integer", name)
        bits = 32 if spec.kind == "int" else 64  # what Avro (and ClickHouse) can hold
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise InvalidEvent("wrong_type", f"{name} does not fit a {bits}-bit integer", name)
    elif spec.kind == "boolean" and not isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{name} must be true or false", name)
    return value


def _check_rules(event_type: str, details: dict[str, Any]) -> None:
    if event_type == "payment.made":
        if details["amount_cents"] <= 0:
            raise InvalidEvent("non_positive_amount", "amount_cents must be > 0", "amount_cents")
        if not _CURRENCY.fullmatch(details["currency"]):
            raise InvalidEvent("bad_currency", "currency must be an ISO 4217 code", "currency")
    elif event_type == "survey.response" and not 1 <= details["score"] <= 5:
        raise InvalidEvent("score_out_of_range", "score must be 1..5", "score")


def validate_event(
    obj: Any, *, now: datetime | None = None, bounds: TimeBounds | None = None
) -> RawEvent:
    """Return the event as a ``RawEvent`` or raise ``InvalidEvent`` naming the first bad field.

    ``now``/``bounds`` enable the absurd-timestamp check, which offline files may skip.
    """
    if type(obj) is not dict and not isinstance(obj, Mapping):  # dict first: an ABC check costs
        raise InvalidEvent("not_an_object", "event must be a JSON object")
    event_id = _required_string(obj, "event_id")
    event_type = _required_string(obj, "event_type")
    spec = event_types().get(event_type)
    if spec is None:
        raise InvalidEvent(
            "unknown_event_type", "event_type is not one of the SPEC §2 event types", "event_type"
        )
    if "occurred_at" not in obj or obj["occurred_at"] is None:
        raise InvalidEvent("missing_field", "missing required field occurred_at", "occurred_at")
    occurred_at = parse_instant(obj["occurred_at"])
    if now is not None:
        (bounds or TimeBounds()).check(occurred_at, now)
    practice_id = _required_string(obj, "practice_id")
    if not is_practice_id(practice_id):
        raise InvalidEvent(
            "bad_practice_id", f"practice_id must be {PRACTICE_ID_RULE}", "practice_id"
        )
    patient_id = _required_string(obj, "patient_id")
    details = {f.name: _check_field(f, obj) for f in spec.fields}
    _check_rules(event_type, details)
    return RawEvent(event_id, event_type, occurred_at, practice_id, patient_id, details)


def to_flat_json(event: RawEvent) -> dict[str, Any]:
    """The SPEC §2 JSON shape of an event (used by the simulator and the JSONL writer)."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "practice_id": event.practice_id,
        "patient_id": event.patient_id,
    }
    out.update({k: v for k, v in event.details.items() if v is not None})
    return out
