"""The compiled Avro closures against fastavro: the same bytes written, the same records read,
and for damaged input the same answer (value or error) as fastavro alone gives."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalogue import load_named_schema
from schemas.serializer import AvroCodec, SerializationError

SCHEMAS = ["RawEvent", "CleanEvent", "Alert", "DeadLetter"]


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Every value fastavro writes for ``schema``, as fastavro reads it back."""
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "double": st.floats(allow_nan=False),
            "string": st.text(),
            "bytes": st.binary(),
        }[schema]
    if isinstance(schema, list):
        branches = []
        for branch in schema:
            resolved = named.get(branch, branch) if isinstance(branch, str) else branch
            strategy = values(branch, named)
            if isinstance(resolved, dict) and resolved.get("type") == "record":
                strategy = strategy.map(lambda v, n=resolved["name"]: (n, v))
            branches.append(strategy)
        return st.one_of(branches)
    if schema.get("logicalType") == "timestamp-millis":
        return st.integers(-(2**40), 2**42).map(
            lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        )
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries(
            {f["name"]: values(f["type"], named) for f in schema["fields"]}
        )
    if kind == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    return values(kind, named)


def fastavro_only(name: str) -> AvroCodec:
    codec = AvroCodec(name)
    codec._fast_reader = codec._fast_writer = None
    return codec


def answer(codec: AvroCodec, data: bytes) -> Any:
    try:
        return ("ok", codec.decode_record(data))
    except SerializationError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_the_pipeline_uses_is_compiled(name: str) -> None:
    codec = AvroCodec(name)
    assert codec._fast_reader is not None and codec._fast_writer is not None


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_bytes_and_same_records_as_fastavro(name: str, data: st.DataObject) -> None:
    schema = load_named_schema(name)
    record = data.draw(values(schema, {}))
    fast, slow = AvroCodec(name), fastavro_only(name)
    encoded = fast.encode_record(record)
    assert encoded == slow.encode_record(record)
    assert fast._fast_decode(encoded) is not None  # the fast path took it
    assert fast.decode_record(encoded) == slow.decode_record(encoded)
    body = io.BytesIO(encoded[10:])
    assert fast.decode_record(encoded) == fastavro.schemaless_reader(
        body, schema, schema, return_record_name=True
    )


@pytest.mark.parametrize("name", ["RawEvent", "CleanEvent"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bytes_get_fastavros_answer(name: str, data: st.DataObject) -> None:
    schema = load_named_schema(name)
    record = data.draw(values(schema, {}))
    fast, slow = AvroCodec(name), fastavro_only(name)
    encoded = bytearray(fast.encode_record(record))
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip" and len(encoded) > 10:
        at = data.draw(st.integers(10, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    elif how == "cut":
        del encoded[data.draw(st.integers(10, len(encoded))) :]
    else:
        encoded += data.draw(st.binary(min_size=1, max_size=4))
    assert answer(fast, bytes(encoded)) == answer(slow, bytes(encoded))


def test_a_value_the_fast_writer_refuses_is_left_to_fastavro() -> None:
    fast, slow = AvroCodec("CleanEvent"), fastavro_only("CleanEvent")
    record = {
        "event_id": "e",
        "event_type": "patient.seen",
        "occurred_at": 1_767_603_600_000,  # millis as an int: fastavro takes it as is
        "practice_id": "P",
        "patient_pseudonym": "p",
        "details": ("portalpulse.PatientSeen", {"encounter_id": "v"}),
    }
    assert fast.encode_record(record) == slow.encode_record(record)
    with pytest.raises((ValueError, TypeError, KeyError)):
        fast.encode_record({**record, "details": ("portalpulse.Nothing", {})})
