"""Ingest: bytes from a raw topic (or a JSONL line) → a clean, pseudonymized event or a dead letter.

Accepted encodings on the raw topics: Avro ``RawEvent`` in single-object or Confluent framing,
and SPEC §2 JSON (what many portals emit as webhooks). Whatever is refused becomes a dead-letter
record carrying the original bytes, the reason and the field, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from portal_pulse.pseudonym import Pseudonymizer
from schemas.model import CleanEvent, RawEvent
from schemas.serializer import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    AvroCodec,
    SerializationError,
    record_to_flat,
)
from schemas.validation import InvalidEvent, TimeBounds, validate_event

__all__ = ["Deduplicator", "Ingestor", "Rejected", "pseudonymize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an input was refused; turned into a DeadLetter record by the caller."""

    reason: str
    detail: str
    field: str | None = None
    event_id: str | None = None
    practice_id: str | None = None

    def dead_letter(
        self, raw: bytes, topic: str, partition: int, offset: int, received_at: datetime
    ) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "detail": self.detail,
            "field": self.field,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "event_id": self.event_id,
            "practice_id": self.practice_id,
            "received_at": received_at,
            "raw": raw,
        }


class Deduplicator:
    """Bounded memory of recent event ids (LRU): a duplicate within ``capacity`` ids is dropped.

    The worker persists it: ``on_add``/``on_evict`` write each id (with the input partition it
    came from) to a compacted changelog, and ``restore`` seeds it again after a restart. Anything
    older that comes again is caught downstream: ClickHouse tables replace on their keys and the
    state machines ignore messages and replies they have already counted.
    """

    def __init__(
        self,
        capacity: int,
        on_add: Callable[[str, int], None] | None = None,
        on_evict: Callable[[str, int], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.on_add = on_add
        self.on_evict = on_evict
        self._seen: OrderedDict[str, int] = OrderedDict()

    def seen(self, event_id: str, partition: int = 0) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return True
        self._seen[event_id] = partition
        if self.on_add is not None:
            self.on_add(event_id, partition)
        if len(self._seen) > self.capacity:
            evicted, where = self._seen.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(evicted, where)
        return False

    def restore(self, items: Iterable[tuple[str, int]]) -> None:
        """Seed remembered ids (order unknown after a restart; capacity still holds)."""
        for event_id, partition in items:
            if event_id not in self._seen and len(self._seen) < self.capacity:
                self._seen[event_id] = partition

    def __len__(self) -> int:
        return len(self._seen)


def pseudonymize(event: RawEvent, pseudonym: Pseudonymizer) -> CleanEvent:
    return CleanEvent(
        event.event_id,
        event.event_type,
        event.occurred_at,
        event.practice_id,
        pseudonym(event.practice_id, event.patient_id),
        event.details,
    )


def _ids_of(obj: Any) -> tuple[str | None, str | None]:
    if isinstance(obj, dict):
        eid, pid = obj.get("event_id"), obj.get("practice_id")
        return (eid if isinstance(eid, str) else None, pid if isinstance(pid, str) else None)
    return None, None


class Ingestor:
    """Decode, validate, de-duplicate and pseudonymize; one instance per worker or replay."""

    def __init__(
        self,
        codec: AvroCodec,
        pseudonym: Pseudonymizer,
        *,
        dedup_capacity: int = 1_000_000,
        bounds: TimeBounds | None = None,
        check_clock: bool = True,
    ) -> None:
        self.codec = codec
        self.pseudonym = pseudonym
        self.dedup = Deduplicator(dedup_capacity)
        self.bounds = bounds or TimeBounds()
        self.check_clock = check_clock
        self.duplicates = 0

    def decode(self, data: bytes) -> dict[str, Any] | Rejected:
        """Raw bytes → the flat SPEC §2 mapping, whatever the encoding."""
        if not data:
            return Rejected("undecodable", "empty message")
        if data[:2] != SINGLE_OBJECT_MAGIC and data[:1] != CONFLUENT_MAGIC:
            try:
                obj = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if data.lstrip()[:1] == b"{":
                    return Rejected("invalid_json", f"not JSON: {exc}")
                return Rejected("undecodable", "neither Avro (C3 01 or 00 framing) nor JSON")
            return (
                obj if isinstance(obj, dict) else Rejected("not_an_object", "JSON is not an object")
            )
        try:
            return record_to_flat(self.codec.decode_record(data))
        except SerializationError as exc:
            return Rejected("undecodable", str(exc))

    def accept(
        self, obj: Any, now: datetime | None = None, partition: int = 0
    ) -> CleanEvent | Rejected | None:
        """The clean event, a rejection, or None for a duplicate."""
        if isinstance(obj, dict) and "_details_mismatch" in obj:
            eid, pid = _ids_of(obj)
            return Rejected(
                "details_mismatch",
                f"details are a {obj['_details_mismatch']} but event_type is {obj.get('event_type')}",
                "details",
                eid,
                pid,
            )
        if self.check_clock and now is None:
            now = datetime.now(UTC)
        try:
            raw = validate_event(obj, now=now if self.check_clock else None, bounds=self.bounds)
        except InvalidEvent as exc:
            eid, pid = _ids_of(obj)
            return Rejected(exc.reason, exc.detail, exc.field, eid, pid)
        return self._admit(raw, partition)

    def admit(
        self, raw: RawEvent, now: datetime | None = None, partition: int = 0
    ) -> CleanEvent | Rejected | None:
        """An event already validated (a JSONL line): only the clock check, dedup and pseudonym."""
        if self.check_clock:
            try:
                self.bounds.check(raw.occurred_at, now or datetime.now(UTC))
            except InvalidEvent as exc:
                return Rejected(exc.reason, exc.detail, exc.field, raw.event_id, raw.practice_id)
        return self._admit(raw, partition)

    def _admit(self, raw: RawEvent, partition: int) -> CleanEvent | None:
        if self.dedup.seen(raw.event_id, partition):
            self.duplicates += 1
            return None
        return pseudonymize(raw, self.pseudonym)

    def ingest(
        self, data: bytes, now: datetime | None = None, partition: int = 0
    ) -> CleanEvent | Rejected | None:
        decoded = self.decode(data)
        if isinstance(decoded, Rejected):
            return decoded
        return self.accept(decoded, now, partition)


def bounds_from(max_future_seconds: float, max_past_days: int) -> TimeBounds:
    return TimeBounds(timedelta(seconds=max_future_seconds), timedelta(days=max_past_days))
