"""Avro single-object encoding: C3 01, 8-byte little-endian CRC-64-AVRO fingerprint, body."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC: Final = b"\xc3\x01"
HEADER_SIZE: Final = len(MAGIC) + 8
SCHEMA_DIR: Final = Path(__file__).parent
DEFAULT_SCHEMA: Final = "crypto_live.v1.MiniTicker"


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


class SingleObjectCodec:
    """Encodes with one writer schema; decodes any registered writer into the reader schema."""

    def __init__(self, registry: SchemaRegistry, writer: str = DEFAULT_SCHEMA) -> None:
        self._registry = registry
        self._writer = registry.by_name(writer)
        self._header = MAGIC + self._writer.fingerprint
        self._buffer = io.BytesIO()

    @property
    def writer(self) -> RegisteredSchema:
        return self._writer

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One record as single-object bytes."""
        buf = self._buffer
        buf.seek(0)
        buf.truncate()
        buf.write(self._header)
        try:
            fastavro.schemaless_writer(buf, self._writer.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise EncodeError(f"record does not match {self._writer.name}: {err}") from err
        return buf.getvalue()

    def decode(self, data: bytes, reader: RegisteredSchema | None = None) -> dict[str, Any]:
        """Decode single-object bytes, resolving the writer schema to ``reader``."""
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (bad marker or too short)")
        writer = self._registry.by_fingerprint(data[2:HEADER_SIZE])
        target = reader or self._writer
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


def default_codec() -> SingleObjectCodec:
    """The codec for the schemas shipped in this package."""
    return SingleObjectCodec(SchemaRegistry.from_directory())
