"""Avro codecs for every record the pipeline puts on Kafka.

Default framing is Avro single-object encoding (``C3 01`` + little-endian CRC-64-AVRO fingerprint
of the schema's canonical form + body), which needs no registry. When a Schema Registry URL is
given, the Confluent wire format (``00`` + big-endian schema id + body) is used instead.
Decoding accepts either framing, whatever the writer chose. A field added to a schema carries
``"added_in": N``; single-object records written before it (another fingerprint) still decode,
the field taking its default.

Decode errors never quote the bytes: what fails to decode may be PHI sent in the wrong format.
"""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from functools import cache
from typing import Any

import fastavro
from fastavro.types import Schema

from schemas.catalogue import event_types, load_named_schema
from schemas.compiled import NotCompiled, Reader, Writer, compile_reader, compile_writer
from schemas.model import CleanEvent, RawEvent

__all__ = [
    "AvroCodec",
    "SerializationError",
    "crc64_avro",
    "get_codec",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_EMPTY = 0xC15D213AA4D7A795


class SerializationError(ValueError):
    """Bytes that are not a record of the expected schema."""


@cache
def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec names CRC-64-AVRO."""
    table = _crc_table()
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


class AvroCodec:
    """Encodes and decodes one named schema, framed for Kafka."""

    def __init__(self, name: str, registry_url: str | None = None) -> None:
        self.name = name
        self.schema: Schema = load_named_schema(name)
        canonical = fastavro.schema.to_parsing_canonical_form(self.schema)
        self.fingerprint = crc64_avro(canonical.encode())
        self._header = SINGLE_OBJECT_MAGIC + struct.pack("<Q", self.fingerprint)
        # Compiled closures for the current schema (schemas/compiled.py): tried first, with
        # fastavro deciding whatever they are not sure of.
        self._fast_reader: Reader | None
        self._fast_writer: Writer | None
        try:
            self._fast_reader = compile_reader(self.schema)
            self._fast_writer = compile_writer(self.schema)
        except NotCompiled:
            self._fast_reader = self._fast_writer = None
        self._registry = None
        self._schema_id: int | None = None
        self._writers_by_id: dict[int, Schema] = {}
        if registry_url:
            from confluent_kafka.schema_registry import Schema as RegistrySchema
            from confluent_kafka.schema_registry import SchemaRegistryClient

            # new_client: a mock:// URL gets the in-memory registry (tests), others the REST client.
            self._registry = SchemaRegistryClient.new_client({"url": registry_url})
            # Register the plain schema, without fastavro's parse markers and named-type cache.
            full = json.dumps({k: v for k, v in self.schema.items() if not k.startswith("__")})
            self._schema_id = self._registry.register_schema(
                f"portalpulse.{name}-value", RegistrySchema(full, "AVRO")
            )
            self._writers_by_id[self._schema_id] = self.schema

    def encode_record(self, record: dict[str, Any]) -> bytes:
        if (
            self._schema_id is None
            and self._fast_writer is not None
            and (fast := self._fast_encode(record)) is not None
        ):
            return fast
        buf = io.BytesIO()
        if self._schema_id is not None:
            buf.write(CONFLUENT_MAGIC + struct.pack(">I", self._schema_id))
        else:
            buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode_record(self, data: bytes) -> dict[str, Any]:
        if (
            self._fast_reader is not None
            and data[:10] == self._header
            and (fast := self._fast_decode(data)) is not None
        ):
            return fast
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < len(self._header):
                raise SerializationError(f"truncated {self.name} single-object header")
            (fp,) = struct.unpack_from("<Q", data, 2)
            writer, offset = self._writer_by_fingerprint(fp), 10
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            (schema_id,) = struct.unpack_from(">I", data, 1)
            writer, offset = self._writer_for(schema_id), 5
        else:
            raise SerializationError(f"not an Avro {self.name} record (unknown framing)")
        body = io.BytesIO(data[offset:])
        try:
            record = fastavro.schemaless_reader(body, writer, self.schema, return_record_name=True)
        except Exception as exc:  # fastavro raises several types on truncated/garbled input
            # Only the type: fastavro's messages may quote the (possibly PHI) bytes.
            raise SerializationError(
                f"undecodable {self.name} body ({type(exc).__name__})"
            ) from exc
        extra = len(data) - offset - body.tell()
        if extra:  # a valid record followed by anything else is not that record
            raise SerializationError(f"{extra} trailing bytes after the {self.name} record")
        return record

    def _fast_encode(self, record: dict[str, Any]) -> bytes | None:
        """The framed record by the compiled writer, or None when it is not sure (fastavro
        writes it, or says why not)."""
        out = bytearray(self._header)
        try:
            self._fast_writer(out, record)  # type: ignore[misc]
        except Exception:
            return None
        return bytes(out)

    def _fast_decode(self, data: bytes) -> dict[str, Any] | None:
        """The record by the compiled reader, or None when it is not sure (fastavro decides)."""
        try:
            record, end = self._fast_reader(data, 10)  # type: ignore[misc]
        except Exception:
            return None
        return record if end == len(data) else None

    def _writer_by_fingerprint(self, fp: int) -> Schema:
        if fp == self.fingerprint:
            return self.schema
        writer = _earlier_writers(self.name).get(fp)
        if writer is None:  # the value itself is not quoted: it is input bytes
            raise SerializationError(f"unknown schema fingerprint for {self.name}")
        return writer

    def _writer_for(self, schema_id: int) -> Schema:
        if schema_id not in self._writers_by_id:
            if self._registry is None:
                raise SerializationError("Confluent-framed record but no SCHEMA_REGISTRY_URL set")
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                fetched = self._registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise  # registry trouble is not the record's fault: let the caller retry
                raise SerializationError("Confluent schema id is not in the registry") from exc
            try:
                writer = fastavro.parse_schema(json.loads(fetched.schema_str))
            except Exception as exc:
                raise SerializationError(
                    f"unusable writer schema from the registry ({type(exc).__name__})"
                ) from exc
            self._writers_by_id[schema_id] = writer
        return self._writers_by_id[schema_id]


@cache
def _earlier_writers(name: str) -> dict[int, Schema]:
    """Fingerprint → writer schema of each earlier version of ``name``.

    The version before N lacks every field marked ``"added_in": N`` or later; such fields have
    defaults, so the current schema reads those records by Avro schema resolution.
    """
    # Named types are inlined in the loaded schema; drop fastavro's parse markers to re-parse it.
    current = {k: v for k, v in load_named_schema(name).items() if not k.startswith("__")}
    added = sorted({f["added_in"] for f in current.get("fields", []) if "added_in" in f})
    out: dict[int, Schema] = {}
    for version in added:
        fields = [f for f in current["fields"] if f.get("added_in", 0) < version]
        writer = fastavro.parse_schema({**current, "fields": fields}, named_schemas={})
        canonical = fastavro.schema.to_parsing_canonical_form(writer)
        out[crc64_avro(canonical.encode())] = writer
    return out


@cache
def _field_names(event_type: str) -> frozenset[str]:
    return frozenset(f.name for f in event_types()[event_type].fields)


def _details_branch(event_type: str, details: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = event_types()[event_type]
    if details.keys() == _field_names(event_type):  # a validated event's: every field, no other
        return (spec.record, details)
    return (spec.record, {f.name: details.get(f.name, f.default) for f in spec.fields})


def raw_event_to_record(event: RawEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "practice_id": event.practice_id,
        "patient_id": event.patient_id,
        "details": _details_branch(event.event_type, event.details),
    }


def clean_event_to_record(event: CleanEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at,
        "practice_id": event.practice_id,
        "patient_pseudonym": event.patient_pseudonym,
        "details": _details_branch(event.event_type, event.details),
    }


def record_to_flat(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded RawEvent record → the flat SPEC §2 shape, for the one validator.

    A details branch that does not belong to the event type is kept out, so validation names
    the type's missing fields rather than accepting another type's.
    """
    flat = {k: v for k, v in record.items() if k != "details"}
    branch = record.get("details")
    if isinstance(branch, tuple):
        name, fields = branch
        spec = event_types().get(record.get("event_type", ""))
        if spec is not None and spec.record != name:
            flat["_details_mismatch"] = name
            return flat
        flat.update(fields or {})
    return flat


def clean_event_from_record(record: dict[str, Any]) -> CleanEvent:
    branch = record["details"]
    # The decoded record is this call's own: its details dict is taken over, not copied.
    details = branch[1] if isinstance(branch, tuple) else dict(branch or {})
    at = record["occurred_at"]
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return CleanEvent(
        record["event_id"],
        record["event_type"],
        at,
        record["practice_id"],
        record["patient_pseudonym"],
        details,
    )


@cache
def get_codec(name: str, registry_url: str | None = None) -> AvroCodec:
    """One codec per schema and registry per process (schemas are parsed once)."""
    return AvroCodec(name, registry_url)


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)
