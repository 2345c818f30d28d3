"""Ingest: bytes from a raw topic (or a JSONL line) → a clean, pseudonymized event or a dead letter.

Accepted encodings on the raw topics: Avro ``RawEvent`` in single-object or Confluent framing,
and SPEC §2 JSON (what many portals emit as webhooks). Whatever is refused becomes a dead-letter
record carrying the original bytes, the reason and the field, so nothing is lost.

Any byte string ends as exactly one outcome: a poison message that raised here would stop the
worker on the same offset forever. JSON is plain UTF-8 only (no byte order mark, no UTF-16/32),
nested at most ``MAX_JSON_DEPTH`` deep. A rejection names the field and what was expected,
never the value, which may be PHI in the wrong place.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from typing import Any

from portal_pulse import json_text
from portal_pulse.pseudonym import Pseudonymizer
from schemas.catalogue import event_types
from schemas.model import CleanEvent, RawEvent
from schemas.serializer import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    AvroCodec,
    SerializationError,
    record_to_flat,
)
from schemas.validation import (
    InvalidEvent,
    TimeBounds,
    bounded,
    is_practice_id,
    validate_event,
)

__all__ = [
    "MAX_CARRIED_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "RAW_PREFIX_BYTES",
    "Deduplicator",
    "Ingestor",
    "Rejected",
    "Remembered",
    "Verdict",
    "fingerprint",
    "pseudonymize",
]

logger = logging.getLogger(__name__)

RAW_PREFIX_BYTES = 64 * 1024  # of the raw input kept in a dead letter: well under Kafka's 1 MB
MAX_CARRIED_ID_LENGTH = 128  # a dead letter's event_id is its Kafka key and a ClickHouse column
MAX_JSON_DEPTH = 32  # a SPEC §2 event is flat; this leaves room for nested extras, not for bombs


def _carried_id(value: Any) -> str | None:
    """``value`` if it is a plausible identifier, else None: never a payload as a key."""
    if (
        isinstance(value, str)
        and len(value) <= MAX_CARRIED_ID_LENGTH
        and value.strip()
        and value.isprintable()
    ):
        return value
    return None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an input was refused; turned into a DeadLetter record by the caller.

    The detail is bounded and the ids kept only when plausible, however it was built (worker or
    replay): they go to the dead letter's key, ClickHouse and the log.
    """

    reason: str
    detail: str
    field: str | None = None
    event_id: str | None = None
    practice_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", bounded(self.detail))
        object.__setattr__(self, "event_id", _carried_id(self.event_id))
        # Only a valid one: it is a ClickHouse column a dashboard may list.
        practice_id = self.practice_id if is_practice_id(self.practice_id) else None
        object.__setattr__(self, "practice_id", practice_id)

    def dead_letter(
        self, raw: bytes, topic: str, partition: int, offset: int, received_at: datetime
    ) -> dict[str, Any]:
        """The DeadLetter record: only a prefix of ``raw``, so it fits a Kafka message whatever
        came in, with the whole input's length and SHA-256 to match it to the source."""
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
            "raw": bytes(raw[:RAW_PREFIX_BYTES]),
            "raw_length": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "raw_truncated": len(raw) > RAW_PREFIX_BYTES,
        }


class Verdict(StrEnum):
    """What the de-duplication memory says of an event."""

    NEW = "new"
    DUPLICATE = "duplicate"  # the same (practice_id, event_id) with the same content
    CONFLICT = "conflict"  # the same (practice_id, event_id) with other content


_SEP = ":"  # between practice_id and event_id in a memory key; a practice id never holds it
_PARTITION_BITS = 32  # a Kafka partition is an int32: the low bits of a packed value
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def fingerprint(event: CleanEvent) -> int:
    """64 bits of BLAKE2b over what an event says, beyond its ids: equal for the same event
    however it was encoded (JSON or Avro, any UTC offset; stored to the millisecond).

    It is taken of the pseudonymized event, so the memory and its changelog hold no unkeyed
    hash of a patient id (one could be reversed by hashing candidate MRNs).
    """
    millis = (event.occurred_at - _EPOCH) // _MILLISECOND
    text = json_text.canonical_record(
        (event.event_type, millis, event.patient_pseudonym), event.details
    )
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Deduplicator:
    """Bounded memory (LRU) of recent (practice_id, event_id) pairs and a fingerprint of each.

    SPEC §2: an id is unique within its practice, so one practice reusing another's ids changes
    nothing for it. A repeat within ``capacity`` pairs is a duplicate when its fingerprint
    matches, a conflict otherwise (the caller dead-letters it; the first event stands).

    An entry is one string key and one int (fingerprint and input partition packed), so the
    memory costs about what it did when it held bare event ids.

    The worker persists it: ``on_add``/``on_evict`` report each entry (with the input partition
    it came from) for a compacted changelog, and ``restore`` seeds it again after a restart.
    Entries restored from a changelog written before practices were part of the key carry no
    practice and no fingerprint: a repeat of such an id is a duplicate whatever its practice,
    as it was then, until the entry leaves the memory (they are evicted first). Anything older
    that comes again is caught downstream: ClickHouse tables replace on their keys and the
    state machines ignore messages and replies they have already counted.
    """

    def __init__(
        self,
        capacity: int,
        on_add: Callable[[str, str, int, int], None] | None = None,
        on_evict: Callable[[str | None, str, int], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.on_add = on_add
        self.on_evict = on_evict
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._legacy: OrderedDict[str, int] = OrderedDict()  # event_id → partition

    def check(self, practice_id: str, event_id: str, print_: int, partition: int = 0) -> Verdict:
        """Remember the event if new; ``print_`` is its ``fingerprint``."""
        key = practice_id + _SEP + event_id
        packed = self._seen.get(key)
        if packed is not None:
            self._seen.move_to_end(key)
            return Verdict.DUPLICATE if packed >> _PARTITION_BITS == print_ else Verdict.CONFLICT
        if self._legacy and event_id in self._legacy:
            self._legacy.move_to_end(event_id)
            return Verdict.DUPLICATE
        self._seen[key] = _pack(print_, partition)
        if self.on_add is not None:
            self.on_add(practice_id, event_id, partition, print_)
        if len(self._seen) + len(self._legacy) > self.capacity:
            self._evict_oldest()
        return Verdict.NEW

    def _evict_oldest(self) -> None:
        if self._legacy:
            event_id, partition = self._legacy.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(None, event_id, partition)
            return
        key, packed = self._seen.popitem(last=False)
        practice_id, _, event_id = key.partition(_SEP)
        if self.on_evict is not None:
            self.on_evict(practice_id, event_id, packed & _PARTITION_MASK)

    def restore(self, entries: Iterable[Remembered]) -> None:
        """Seed remembered entries (order unknown after a restart; capacity still holds)."""
        for entry in entries:
            if len(self) >= self.capacity:
                return
            if entry.practice_id is None or entry.fingerprint is None:
                self._legacy.setdefault(entry.event_id, entry.partition)
            else:
                key = entry.practice_id + _SEP + entry.event_id
                self._seen.setdefault(key, _pack(entry.fingerprint, entry.partition))

    def __len__(self) -> int:
        return len(self._seen) + len(self._legacy)


def _pack(print_: int, partition: int) -> int:
    if not 0 <= partition <= _PARTITION_MASK:
        raise ValueError(f"partition {partition} is not a Kafka partition number")
    return print_ << _PARTITION_BITS | partition


@dataclass(frozen=True, slots=True)
class Remembered:
    """One entry of the de-duplication memory as a changelog restores it; ``practice_id`` and
    ``fingerprint`` are None for an entry written before they were part of it."""

    practice_id: str | None
    event_id: str
    partition: int
    fingerprint: int | None


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
        return _carried_id(obj.get("event_id")), _carried_id(obj.get("practice_id"))
    return None, None


# -- decoding -------------------------------------------------------------------------------------

_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8 with a byte order mark"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
)
_JSON_START = frozenset(b" \t\r\n{[")
# A string, to its closing quote or the end if unterminated (possessive: never backtracks).
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+"?')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NEITHER = "neither Avro (C3 01 or 00 framing) nor JSON"


def _foreign_encoding(data: bytes) -> str | None:
    """The name of a Unicode encoding other than plain UTF-8 that ``data`` is JSON in, if any.

    ``json.loads`` on bytes would silently accept these; the NUL patterns are RFC 4627's.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    head = data[:4]
    if len(head) == 4 and head.count(0) == 3 and (head[0] in _JSON_START or head[3] in _JSON_START):
        return "UTF-32"
    if len(head) >= 2 and (
        (head[0] == 0 and head[1] in _JSON_START) or (head[0] in _JSON_START and head[1] == 0)
    ):
        return "UTF-16"
    return None


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than ``MAX_JSON_DEPTH``.

    Checked before parsing, so a bracket bomb costs a scan rather than the parser's recursion.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # the usual case: cannot be
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))  # those outside strings
    depths = accumulate(map(_DEPTH_STEP.__getitem__, brackets))
    return max(depths, default=0) > MAX_JSON_DEPTH


def _decode_json(data: bytes) -> dict[str, Any] | Rejected:
    """Plain UTF-8 JSON → its object; the JSON-looking input that fails is ``invalid_json``."""
    encoding = _foreign_encoding(data)
    if encoding is not None:
        return Rejected(
            "bad_encoding", f"JSON must be UTF-8 without a byte order mark, not {encoding}"
        )
    looks_like_json = data.lstrip()[:1] in (b"{", b"[")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if looks_like_json:
            return Rejected("bad_encoding", f"JSON is not valid UTF-8 (at byte {exc.start})")
        return Rejected("undecodable", _NEITHER)
    if looks_like_json and _too_deep(text):
        return Rejected("invalid_json", f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:  # its msg is a fixed phrase, never the input
        problem = f"not JSON: {exc.msg} at character {exc.pos}"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        problem = f"not JSON ({type(exc).__name__})"  # e.g. an integer of 5000 digits
    else:
        if isinstance(obj, dict):
            return obj
        return Rejected("not_an_object", "JSON is not an object")
    return (
        Rejected("invalid_json", problem) if looks_like_json else Rejected("undecodable", _NEITHER)
    )


def _mismatch_detail(obj: dict[str, Any]) -> str:
    """Names the two record types involved, and only when they are the catalogue's own."""
    types = event_types()
    branch = obj["_details_mismatch"]
    records = {spec.record: spec.record.rsplit(".", 1)[-1] for spec in types.values()}
    got = records.get(branch, "another") if isinstance(branch, str) else "another"
    event_type = obj.get("event_type")
    spec = types.get(event_type) if isinstance(event_type, str) else None
    if spec is None:
        return f"details are a {got} record, which does not match event_type"
    return f"details are a {got} record but {spec.name} needs {records[spec.record]}"


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
        # occurred_at of the last duplicate: it still tells the watermark how far its source is.
        self.last_duplicate_at: datetime | None = None

    def decode(self, data: bytes) -> dict[str, Any] | Rejected:
        """Raw bytes → the flat SPEC §2 mapping, whatever the encoding."""
        if not data:
            return Rejected("undecodable", "empty message")
        if data[:2] != SINGLE_OBJECT_MAGIC and data[:1] != CONFLUENT_MAGIC:
            return _decode_json(data)
        try:
            return record_to_flat(self.codec.decode_record(data))
        except SerializationError as exc:
            encoding = _foreign_encoding(data)  # UTF-16/32 big-endian JSON starts with 00
            if encoding is not None:
                return Rejected("bad_encoding", f"JSON must be UTF-8, not {encoding}")
            return Rejected("undecodable", str(exc))

    def accept(
        self, obj: Any, now: datetime | None = None, partition: int = 0
    ) -> CleanEvent | Rejected | None:
        """The clean event, a rejection, or None for a duplicate."""
        if isinstance(obj, dict) and "_details_mismatch" in obj:
            return Rejected("details_mismatch", _mismatch_detail(obj), "details", *_ids_of(obj))
        if self.check_clock and now is None:
            now = datetime.now(UTC)
        try:
            raw = validate_event(obj, now=now if self.check_clock else None, bounds=self.bounds)
        except InvalidEvent as exc:
            return Rejected(exc.reason, exc.detail, exc.field, *_ids_of(obj))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # A gap in the checks: dead-letter it (raw bytes kept) rather than stop the worker.
            # Only the type is logged: the message could quote the event.
            logger.error("validation failed unexpectedly: %s", type(exc).__name__)
            return Rejected(
                "unprocessable",
                f"the event could not be checked ({type(exc).__name__})",
                None,
                *_ids_of(obj),
            )
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

    def _admit(self, raw: RawEvent, partition: int) -> CleanEvent | Rejected | None:
        clean = pseudonymize(raw, self.pseudonym)
        verdict = self.dedup.check(raw.practice_id, raw.event_id, fingerprint(clean), partition)
        if verdict is Verdict.NEW:
            return clean
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
            self.last_duplicate_at = raw.occurred_at
            return None
        return Rejected(
            "conflicting_duplicate",
            "event_id was already used in this practice by an event with other content",
            "event_id",
            raw.event_id,
            raw.practice_id,
        )

    def ingest(
        self, data: bytes, now: datetime | None = None, partition: int = 0
    ) -> CleanEvent | Rejected | None:
        decoded = self.decode(data)
        if isinstance(decoded, Rejected):
            return decoded
        return self.accept(decoded, now, partition)


def bounds_from(max_future_seconds: float, max_past_days: int) -> TimeBounds:
    return TimeBounds(timedelta(seconds=max_future_seconds), timedelta(days=max_past_days))
