"""Avro binary encoding compiled into plain closures for one parsed schema.

fastavro spends about 10 µs on a record of the size an event is, most of it in generic
dispatch; the worker decodes and encodes three such records per event. The closures here do the
same work for the types our schemas use (null, boolean, int, long, double, string, bytes, enum,
record, union, timestamp-millis) in a third of the time.

They only ever take the fast path for data they are sure of: any doubt (a type they do not
compile, bytes that do not parse, a value they cannot write) raises, and ``AvroCodec`` then
hands the same input to fastavro, whose answer (value or error) stands. So the result is
fastavro's for every input; the unit tests hold the two side by side.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Reader", "Writer", "compile_reader", "compile_writer"]

Reader = Callable[[bytes, int], tuple[Any, int]]
Writer = Callable[[bytearray, Any], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d")


class NotCompiled(ValueError):
    """A schema construct the compiler does not handle: use fastavro for the whole schema."""


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    if b < 0x80:  # one byte: most lengths, enum indexes and union branches
        return (b >> 1) ^ -(b & 1), pos
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _write_long(out: bytearray, value: int) -> None:
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError("long out of range")
    n = (value << 1) ^ (value >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _read_long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise ValueError("bytes run past the record")
    return buf[pos:end], end


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise ValueError("string runs past the record")
    return buf[pos:end].decode("utf-8"), end


def _write_string(out: bytearray, value: str) -> None:
    if type(value) is not str:
        raise TypeError("not a str")
    data = value.encode("utf-8")
    _write_long(out, len(data))
    out += data


def _read_null(buf: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    b = buf[pos]
    if b > 1:
        raise ValueError("boolean byte neither 0 nor 1")
    return b == 1, pos + 1


def _read_double(buf: bytes, pos: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(buf, pos)[0], pos + 8


def _read_timestamp_millis(buf: bytes, pos: int) -> tuple[datetime, int]:
    ms, pos = _read_long(buf, pos)
    return _EPOCH + timedelta(microseconds=ms * 1000), pos


def _write_timestamp_millis(out: bytearray, value: Any) -> None:
    if type(value) is int:
        _write_long(out, value)
        return
    if type(value) is not datetime or value.tzinfo is None:
        raise TypeError("not an aware datetime")
    delta = value - _EPOCH  # fastavro's arithmetic, to the same millisecond
    _write_long(out, (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _write_null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise TypeError("not None")


def _write_boolean(out: bytearray, value: Any) -> None:
    if type(value) is not bool:
        raise TypeError("not a bool")
    out.append(1 if value else 0)


def _write_int(out: bytearray, value: Any) -> None:
    if type(value) is not int:
        raise TypeError("not an int")
    _write_long(out, value)


def _write_double(out: bytearray, value: Any) -> None:
    if type(value) is not float:
        raise TypeError("not a float")
    out += _DOUBLE.pack(value)


def _write_bytes(out: bytearray, value: Any) -> None:
    if type(value) is not bytes:
        raise TypeError("not bytes")
    _write_long(out, len(value))
    out += value


def _name(schema: Any) -> str | None:
    return schema.get("name") if isinstance(schema, dict) else None


def compile_reader(schema: Any, named: dict[str, Any] | None = None) -> Reader:
    """A reader of ``schema`` (fastavro-parsed, writer = reader) as fastavro reads it with
    ``return_record_name=True``."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return compile_reader(named[schema], named)
        simple = {
            "null": _read_null,
            "boolean": _read_boolean,
            "int": _read_long,
            "long": _read_long,
            "double": _read_double,
            "string": _read_string,
            "bytes": _read_bytes,
        }.get(schema)
        if simple is None:
            raise NotCompiled(schema)
        return simple  # type: ignore[return-value]
    if isinstance(schema, list):
        return _union_reader(schema, named)
    kind = schema.get("type")
    if schema.get("logicalType") == "timestamp-millis" and kind == "long":
        return _read_timestamp_millis
    if "logicalType" in schema:
        raise NotCompiled(schema["logicalType"])
    if kind == "record":
        named[schema["name"]] = schema
        return _record_reader(schema, named)
    if kind == "enum":
        named[schema["name"]] = schema
        symbols = list(schema["symbols"])

        def read_enum(buf: bytes, pos: int) -> tuple[str, int]:
            index, pos = _read_long(buf, pos)
            if not 0 <= index < len(symbols):
                raise ValueError("enum index out of range")
            return symbols[index], pos

        return read_enum
    if isinstance(kind, (str, list, dict)) and set(schema) <= {"type"}:
        return compile_reader(kind, named)
    raise NotCompiled(str(kind))


def _union_reader(branches: list[Any], named: dict[str, Any]) -> Reader:
    readers = [compile_reader(b, named) for b in branches]
    resolved = [named.get(b, b) if isinstance(b, str) else b for b in branches]
    # fastavro names a record read from a union; a union of null and one record it does too.
    names = [
        _name(b) if isinstance(b, dict) and b.get("type") == "record" else None for b in resolved
    ]

    def read_union(buf: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _read_long(buf, pos)
        if not 0 <= index < len(readers):
            raise ValueError("union index out of range")
        value, pos = readers[index](buf, pos)
        name = names[index]
        return (value if name is None else (name, value)), pos

    return read_union


def compile_writer(schema: Any, named: dict[str, Any] | None = None) -> Writer:
    """A writer producing fastavro's bytes for valid data; raises on anything else."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return compile_writer(named[schema], named)
        simple = {
            "null": _write_null,
            "boolean": _write_boolean,
            "int": _write_int,
            "long": _write_int,
            "double": _write_double,
            "string": _write_string,
            "bytes": _write_bytes,
        }.get(schema)
        if simple is None:
            raise NotCompiled(schema)
        return simple
    if isinstance(schema, list):
        return _union_writer(schema, named)
    kind = schema.get("type")
    if schema.get("logicalType") == "timestamp-millis" and kind == "long":
        return _write_timestamp_millis
    if "logicalType" in schema:
        raise NotCompiled(schema["logicalType"])
    if kind == "record":
        named[schema["name"]] = schema
        return _record_writer(schema, named)
    if kind == "enum":
        named[schema["name"]] = schema
        index = {symbol: i for i, symbol in enumerate(schema["symbols"])}

        def write_enum(out: bytearray, value: Any) -> None:
            _write_long(out, index[value])

        return write_enum
    if isinstance(kind, (str, list, dict)) and set(schema) <= {"type"}:
        return compile_writer(kind, named)
    raise NotCompiled(str(kind))


def _union_writer(branches: list[Any], named: dict[str, Any]) -> Writer:
    writers = [compile_writer(b, named) for b in branches]
    resolved = [named.get(b, b) if isinstance(b, str) else b for b in branches]
    by_name = {
        _name(b): i for i, b in enumerate(resolved) if isinstance(b, dict) and _name(b) is not None
    }
    kinds = [b if isinstance(b, str) else b.get("type") for b in resolved]
    if len(branches) != 2 or kinds[0] != "null" or kinds[1] in ("record", "null"):
        simple_optional = None
    else:
        simple_optional = writers[1]

    def write_union(out: bytearray, value: Any) -> None:
        if type(value) is tuple and len(value) == 2 and value[0] in by_name:
            index = by_name[value[0]]
            out.append(index << 1)  # union indexes here are < 64: one byte
            writers[index](out, value[1])
            return
        if simple_optional is not None:  # ["null", T] for a non-record T
            if value is None:
                out.append(0)
            else:
                out.append(2)
                simple_optional(out, value)
            return
        raise TypeError("union value the fast writer does not place")

    if len(branches) > 63:
        raise NotCompiled("union of more than 63 branches")
    return write_union


# -- records as straight-line code -------------------------------------------------------------
#
# A record's reader and writer are generated as one function each, its fields in order, with
# strings (and optional strings, ["null", "string"]) read and written in place: a loop over
# per-field closures cost a call, a tuple and a dict store per field. Only names from the
# schema (the project's own files) reach the source, as dict keys through ``repr``.


def _is_optional_string(schema: Any) -> bool:
    return schema == ["null", "string"]


def _read_string_lines(var: str, pad: str) -> list[str]:
    return [
        f"{pad}b = buf[pos]",
        f"{pad}if b < 0x80 and not b & 1:  # a one-byte length",
        f"{pad}    end = pos + 1 + (b >> 1)",
        f"{pad}    if end > size:",
        f'{pad}        raise ValueError("string runs past the record")',
        f'{pad}    {var} = buf[pos + 1 : end].decode("utf-8")',
        f"{pad}    pos = end",
        f"{pad}else:",
        f"{pad}    {var}, pos = _read_string(buf, pos)",
    ]


def _record_reader(schema: dict[str, Any], named: dict[str, Any]) -> Reader:
    env: dict[str, Any] = {"_read_string": _read_string}
    lines = ["def read_record(buf, pos):", "    size = len(buf)"]
    for i, field in enumerate(schema["fields"]):
        kind, var = field["type"], f"v{i}"
        if kind == "string":
            lines += _read_string_lines(var, "    ")
        elif _is_optional_string(kind):
            env[f"r{i}"] = compile_reader(kind, named)  # anything but branch 0 or 1
            lines += [
                "    b = buf[pos]",
                "    if b == 0:",
                f"        {var} = None",
                "        pos += 1",
            ]
            lines += ["    elif b == 2:", "        pos += 1", *_read_string_lines(var, "        ")]
            lines += ["    else:", f"        {var}, pos = r{i}(buf, pos)"]
        else:
            env[f"r{i}"] = compile_reader(kind, named)
            lines.append(f"    {var}, pos = r{i}(buf, pos)")
    items = ", ".join(f"{field['name']!r}: v{i}" for i, field in enumerate(schema["fields"]))
    lines.append(f"    return {{{items}}}, pos")
    return _define("read_record", lines, env, schema)


def _write_string_lines(var: str, pad: str) -> list[str]:
    return [
        f"{pad}if type({var}) is not str:",
        f'{pad}    raise TypeError("not a str")',
        f'{pad}data = {var}.encode("utf-8")',
        f"{pad}n = len(data)",
        f"{pad}if n < 64:  # a one-byte length",
        f"{pad}    out.append(n << 1)",
        f"{pad}else:",
        f"{pad}    _write_long(out, n)",
        f"{pad}out += data",
    ]


def _record_writer(schema: dict[str, Any], named: dict[str, Any]) -> Writer:
    env: dict[str, Any] = {"_write_long": _write_long}
    env["names"] = frozenset(field["name"] for field in schema["fields"])
    lines = [
        "def write_record(out, value):",
        "    if type(value) is not dict or not names.issuperset(value):",
        '        raise TypeError("not a record of this schema")',
    ]
    for i, field in enumerate(schema["fields"]):
        kind = field["type"]
        # A missing field: KeyError, and fastavro decides.
        lines.append(f"    v = value[{field['name']!r}]")
        if kind == "string":
            lines += _write_string_lines("v", "    ")
        elif _is_optional_string(kind):
            lines += ["    if v is None:", "        out.append(0)", "    else:"]
            lines += ["        out.append(2)", *_write_string_lines("v", "        ")]
        else:
            env[f"w{i}"] = compile_writer(kind, named)
            lines.append(f"    w{i}(out, v)")
    return _define("write_record", lines, env, schema)


def _define(name: str, lines: list[str], env: dict[str, Any], schema: dict[str, Any]) -> Any:
    code = compile("\n".join(lines) + "\n", f"<avro {name} {schema['name']}>", "exec")
    exec(code, env)  # noqa: S102 - source built above from the schema's field names only
    return env[name]
