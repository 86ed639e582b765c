"""Avro single-object encoding: C3 01, 8-byte little-endian CRC-64-AVRO fingerprint, body."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.avro_reader import Reader, compile_reader

MAGIC: Final = b"\xc3\x01"
HEADER_SIZE: Final = len(MAGIC) + 8
SCHEMA_DIR: Final = Path(__file__).parent
MINITICKER_SCHEMA: Final = "crypto_live.v1.MiniTicker"
KLINE_SCHEMA: Final = "crypto_live.v1.Kline"
DEFAULT_SCHEMA: Final = MINITICKER_SCHEMA


class SchemaError(Exception):
    """Base of the errors of schemas/, which imports nothing else of ours."""


class DecodeError(SchemaError):
    """Bytes that cannot be decoded: bad marker, unknown fingerprint or corrupt body."""


class EncodeError(SchemaError):
    """A record that does not match the writer schema."""


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One parsed schema with its name and 8-byte fingerprint."""

    name: str
    fingerprint: bytes
    parsed: Any


def schema_fingerprint(parsed: Any) -> bytes:
    """The 8 fingerprint bytes of a parsed schema, little-endian as the spec requires."""
    # fastavro renders CRC-64-AVRO as the hex of the little-endian bytes ("null" -> 8a8f25cc...).
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


class SchemaRegistry:
    """Writer schemas by fingerprint, built from the .avsc files of a directory."""

    def __init__(self, schemas: list[RegisteredSchema]) -> None:
        self._by_fingerprint = {s.fingerprint: s for s in schemas}
        self._by_name: dict[str, RegisteredSchema] = {}
        for schema in schemas:
            # Several versions may share a name; the last file (sorted) is the newest.
            self._by_name[schema.name] = schema

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> SchemaRegistry:
        """Parse every ``*.avsc`` file below ``directory``."""
        schemas = [
            register(json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(directory.glob("*.avsc"))
        ]
        return cls(schemas)

    def by_fingerprint(self, fp: bytes) -> RegisteredSchema:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}") from None

    def by_name(self, name: str) -> RegisteredSchema:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"no schema named {name!r} in the registry") from None

    def __len__(self) -> int:
        return len(self._by_fingerprint)


def register(schema: Mapping[str, Any]) -> RegisteredSchema:
    """Parse one schema definition."""
    parsed: Any = fastavro.parse_schema(dict(schema))
    return RegisteredSchema(str(parsed["name"]), schema_fingerprint(parsed), parsed)


# Record writer compiled for a flat record of these primitive types (see compile_writer).
_FAST_TYPES: Final = frozenset({"string", "bytes", "long", "int", "boolean"})
_RANGES: Final = {"long": (-(2**63), 2**63 - 1), "int": (-(2**31), 2**31 - 1)}
_LOW14: Final = 0x3FFF
# Varints of 0..16383 (one or two bytes), and 14-bit groups with both continuation bits set.
_VARINTS: Final = tuple(
    bytes([n & 0x7F | 0x80, n >> 7]) if n > 0x7F else bytes([n]) for n in range(16384)
)
_GROUPS: Final = tuple(bytes([n & 0x7F | 0x80, n >> 7 | 0x80]) for n in range(16384))


def _long(value: int) -> bytes:
    """An Avro long: zig-zag, then a little-endian base-128 varint, 14 bits per table lookup."""
    n = (value << 1) ^ (value >> 63)
    if n < 1 << 14:
        return _VARINTS[n]
    if n < 1 << 28:
        return _GROUPS[n & _LOW14] + _VARINTS[n >> 14]
    if n < 1 << 42:
        return _GROUPS[n & _LOW14] + _GROUPS[n >> 14 & _LOW14] + _VARINTS[n >> 28]
    if n < 1 << 56:  # epoch microseconds are here
        groups = (_GROUPS[n & _LOW14], _GROUPS[n >> 14 & _LOW14], _GROUPS[n >> 28 & _LOW14])
        return b"".join((*groups, _VARINTS[n >> 42]))
    return _varint(n)


def _varint(n: int) -> bytes:
    """A non-negative integer as a little-endian base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ClockLongs:
    """Avro longs of a value that moves slowly, such as a clock: the varint's bytes above its
    low 14 bits are kept from the previous value, so most values cost one table lookup and
    one concatenation (epoch ms move past them every 8 s, epoch µs every 8 ms)."""

    __slots__ = ("_high", "_high_bytes")

    def __init__(self) -> None:
        self._high = 0
        self._high_bytes = b""

    def encode(self, value: int) -> bytes:
        """The same bytes as the codec writes for ``value`` as a long."""
        n = (value << 1) ^ (value >> 63)
        high = n >> 14
        if not high:
            return _VARINTS[n]
        if high != self._high:
            self._high, self._high_bytes = high, _varint(high)
        return _GROUPS[n & _LOW14] + self._high_bytes


# Avro lengths are zig-zag longs: the varint of 2n; 0..8191 from the table, longer -> fastavro.
_LENGTHS: Final = tuple(_VARINTS[2 * n] for n in range(8192))
# The same for 0..63 as one-character text: 2n < 128, so an ASCII run of short strings and
# their lengths is built as text and encoded once (see compile_writer).
_SHORT_LENGTHS: Final = tuple(chr(2 * n) for n in range(64))

# For writers built elsewhere for one fixed schema (the producer's miniTicker hot path).
encode_long: Final = _long
SHORT_STRING_LENGTHS: Final = _SHORT_LENGTHS

Writer = Callable[[Mapping[str, Any]], "bytes | None"]


def compile_writer(parsed: Any, header: bytes) -> Writer | None:
    """A function writing ``header`` + the Avro body of a record, byte-identical to fastavro's
    schemaless_writer, for a record schema of string, bytes, long, int and boolean fields
    (else None). It returns None for a record it does not take (a value not exactly of its
    field's Python type or out of range, a missing field, a string of 8 KiB or more), so the
    caller falls back to fastavro and keeps fastavro's defaults, coercions and errors."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = parsed["fields"]
    if not all(isinstance(f["type"], str) and f["type"] in _FAST_TYPES for f in fields):
        return None
    # Generated once per schema: one straight-line function, no per-field dispatch.
    reads, checks, encodes, parts = [], [], [], ["_header"]
    # The quick path: each run of consecutive string fields as one f-string of one-character
    # lengths and the values, encoded at once. It holds when the run is ASCII (then characters
    # are bytes, and isascii() is O(1)) and every string is under 64 characters.
    runs: list[list[str]] = []
    quick_parts: list[str] = ["_header"]
    in_run = False
    for i, field in enumerate(fields):
        kind, value = field["type"], f"v{i}"
        reads.append(f"        {value} = record[{field['name']!r}]")
        if kind == "string":
            checks.append(f"type({value}) is not str")
            encodes.append(f"    b{i} = {value}.encode()")
            parts += [f"_LENGTHS[len(b{i})]", f"b{i}"]
            if not in_run:
                runs.append([])
                quick_parts.append(f"t{len(runs) - 1}.encode()")
                in_run = True
            runs[-1].append(f"{{_SHORT_LENGTHS[len({value})]}}{{{value}}}")
            continue
        if kind == "bytes":
            checks.append(f"type({value}) is not bytes")
            part = [f"_LENGTHS[len({value})]", value]
        elif kind == "boolean":
            checks.append(f"type({value}) is not bool")
            part = [f"(b'\\x01' if {value} else b'\\x00')"]
        else:
            low, high = _RANGES[kind]
            checks.append(f"type({value}) is not int or not {low} <= {value} <= {high}")
            part = [f"_long({value})"]
        parts += part
        quick_parts += part
        in_run = False
    quick = []
    if runs:
        ascii_check = " and ".join(f"t{r}.isascii()" for r in range(len(runs)))
        quick = [
            "    try:",
            *(f'        t{r} = f"{"".join(run)}"' for r, run in enumerate(runs)),
            f"        if {ascii_check}:",
            f"            return b''.join(({', '.join(quick_parts)},))",
            "    except IndexError:",
            "        pass  # a string of 64 characters or more, or bytes of 8 KiB or more",
        ]
    source = "\n".join(
        [
            "def write(record):",
            "    try:",
            *reads,
            "    except (KeyError, TypeError):",
            "        return None",
            f"    if {' or '.join(checks)}:",
            "        return None",
            *quick,
            *encodes,
            "    try:",
            f"        return b''.join(({', '.join(parts)},))",
            "    except IndexError:",
            "        return None",
        ]
    )
    namespace: dict[str, Any] = {
        "_header": header,
        "_LENGTHS": _LENGTHS,
        "_SHORT_LENGTHS": _SHORT_LENGTHS,
        "_long": _long,
    }
    exec(compile(source, f"<avro writer {parsed['name']}>", "exec"), namespace)  # noqa: S102
    writer: Writer = namespace["write"]
    return writer


class SingleObjectCodec:
    """Encodes with one writer schema; decodes any registered writer into the reader schema."""

    def __init__(self, registry: SchemaRegistry, writer: str = DEFAULT_SCHEMA) -> None:
        self._registry = registry
        self._writer = registry.by_name(writer)
        self._header = MAGIC + self._writer.fingerprint
        self._buffer = io.BytesIO()
        self._compiled = compile_writer(self._writer.parsed, self._header)
        # Compiled readers by writer fingerprint, made on first use (None: fastavro only).
        self._readers: dict[bytes, Reader | None] = {}
        # decode_typed's fast path, filled on first use: for a writer that is the newest
        # schema of its name and has a compiled reader, by fingerprint, the name and the reader.
        self._typed: dict[bytes, tuple[str, Reader]] = {}

    @property
    def writer(self) -> RegisteredSchema:
        return self._writer

    @property
    def header(self) -> bytes:
        """The single-object header every record of the writer schema starts with."""
        return self._header

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One record as single-object bytes."""
        if self._compiled is not None:
            try:
                data = self._compiled(record)
            except UnicodeEncodeError:
                data = None  # fastavro raises it, as an EncodeError
            if data is not None:
                return data
        return self.encode_with_fastavro(record)

    def encode_with_fastavro(self, record: Mapping[str, Any]) -> bytes:
        """:meth:`encode` through fastavro's writer (the reference the compiled one matches)."""
        buf = self._buffer
        buf.seek(0)
        buf.truncate()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self._writer.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as err:
            raise EncodeError(f"record does not match {self._writer.name}: {err}") from err
        return buf.getvalue()

    def decode(self, data: bytes, reader: RegisteredSchema | None = None) -> dict[str, Any]:
        """Decode single-object bytes, resolving the writer schema to ``reader``."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (bad marker or too short)")
        writer = self._registry.by_fingerprint(data[2:HEADER_SIZE])
        target = reader or self._writer
        if writer.fingerprint == target.fingerprint:  # no resolution: the compiled reader
            fast = self._reader_of(writer)
            if fast is not None and (fast_record := fast(data, HEADER_SIZE)) is not None:
                return fast_record
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record: Any = fastavro.schemaless_reader(body, writer.parsed, target.parsed)
        except Exception as err:  # fastavro raises many types on corrupt input
            raise DecodeError(f"corrupt {writer.name} body: {type(err).__name__} {err}") from err
        if body.tell() != len(data) - HEADER_SIZE:
            raise DecodeError(f"corrupt {writer.name} body: trailing bytes")
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.name} is not a record schema")
        return record

    def _reader_of(self, writer: RegisteredSchema) -> Reader | None:
        if writer.fingerprint not in self._readers:
            self._readers[writer.fingerprint] = compile_reader(writer.parsed)
        return self._readers[writer.fingerprint]

    def decode_typed(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode bytes of any registered type: (schema name, record in the newest schema of
        that name). Consumers route by the name; a type they do not handle is theirs to
        dead-letter."""
        typed = self._typed.get(data[2:HEADER_SIZE])
        if typed is not None and data[:2] == MAGIC:  # the newest writer: no resolution
            name, read = typed
            record = read(data, HEADER_SIZE)
            if record is not None:
                return name, record
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (bad marker or too short)")
        writer = self._registry.by_fingerprint(data[2:HEADER_SIZE])
        newest = self._registry.by_name(writer.name)
        if writer is newest and (reader := self._reader_of(writer)) is not None:
            self._typed[writer.fingerprint] = (writer.name, reader)
        return writer.name, self.decode(data, newest)

    def for_writer(self, writer: str) -> SingleObjectCodec:
        """A codec over the same registry that encodes with ``writer``."""
        return SingleObjectCodec(self._registry, writer)


def default_codec() -> SingleObjectCodec:
    """The codec for the schemas shipped in this package."""
    return SingleObjectCodec(SchemaRegistry.from_directory())
