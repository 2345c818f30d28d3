"""Wire forms of what the agents pass between them: alerts in Avro, response facts in JSON."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

from portal_pulse.domain.live import LiveRow
from portal_pulse.domain.records import Alert, ResponseFact
from schemas.serializer import AvroCodec

__all__ = [
    "alert_from_bytes",
    "alert_to_bytes",
    "live_from_bytes",
    "live_to_bytes",
    "response_from_bytes",
    "response_to_bytes",
]

_RESPONSE_TIMES = {f.name for f in fields(ResponseFact) if f.name.endswith("_at")}


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def alert_to_bytes(codec: AvroCodec, alert: Alert) -> bytes:
    return codec.encode_record(alert.as_dict())


def alert_from_bytes(codec: AvroCodec, data: bytes) -> Alert:
    rec: dict[str, Any] = codec.decode_record(data)
    for name in ("due_at", "raised_at", "updated_at", "resolved_at", "withdrawn_at"):
        rec[name] = _aware(rec.get(name))
    return Alert(**{f.name: rec.get(f.name) for f in fields(Alert)})


def response_to_bytes(fact: ResponseFact) -> bytes:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fact.as_dict().items()}
    return json.dumps(out, separators=(",", ":")).encode()


def response_from_bytes(data: bytes) -> ResponseFact:
    obj = json.loads(data)
    for name in _RESPONSE_TIMES:
        if obj.get(name) is not None:  # withdrawn_at, updated_at: null or absent (older writers)
            obj[name] = datetime.fromisoformat(obj[name])
    return ResponseFact(**obj)


def live_to_bytes(row: LiveRow) -> bytes:
    out = {
        "practice_id": row.practice_id,
        "partition": row.partition,
        "day": row.day.isoformat(),
        "today": row.today,
        "trailing_7d": row.trailing_7d,
        "open_by_pool": row.open_by_pool,
        "as_of": row.as_of.isoformat(),
    }
    return json.dumps(out, separators=(",", ":")).encode()


def live_from_bytes(data: bytes) -> LiveRow:
    obj = json.loads(data)
    return LiveRow(
        obj["practice_id"],
        obj["partition"],
        date.fromisoformat(obj["day"]),
        obj["today"],
        obj["trailing_7d"],
        obj["open_by_pool"],
        datetime.fromisoformat(obj["as_of"]),
    )
