"""The writer compiled for the record schema writes exactly fastavro's bytes, and hands anything
it does not take to fastavro, so fastavro's defaults, coercions and errors stay."""

from __future__ import annotations

import random
import string
from typing import Any

import fastavro
import pytest

from schemas.codec import (
    EncodeError,
    SchemaRegistry,
    SingleObjectCodec,
    compile_writer,
    default_codec,
    register,
)
from tests.schemas.test_codec import RECORD

LONGS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2**13, 2**27, 2**41, 2**48, 2**55, 2**62]
LONGS += [-n for n in LONGS] + [2**63 - 1, -(2**63), 1_795_000_000_123, 1_795_000_000_200_000]
ALPHABET = string.printable + "éü日本語\U0001f600\x00"


def random_string(rng: random.Random) -> str:
    length = rng.choice([0, 1, 5, 20, 63, 64, 127, 128, 4095, 4096, 8191, 8192, 9000])
    if rng.random() < 0.7:
        length = min(length, 40)
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def random_record(rng: random.Random, fields: list[dict[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in fields:
        kind = field["type"]
        if kind == "string":
            record[field["name"]] = random_string(rng)
        elif kind == "long":
            record[field["name"]] = rng.choice([*LONGS, rng.randrange(-(2**63), 2**63)])
        elif kind == "int":
            record[field["name"]] = rng.randrange(-(2**31), 2**31)
        elif kind == "bytes":
            record[field["name"]] = rng.randbytes(rng.choice([0, 3, 200, 9000]))
        else:
            record[field["name"]] = rng.random() < 0.5
    return record


def test_miniticker_records_match_fastavro_byte_for_byte() -> None:
    codec = default_codec()
    fields = codec.writer.parsed["fields"]
    rng = random.Random(11)
    for _ in range(5_000):
        record = random_record(rng, fields)
        assert codec.encode(record) == codec.encode_with_fastavro(record), record
    assert codec.encode(RECORD) == codec.encode_with_fastavro(RECORD)


def test_every_fast_type_matches_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "AllKinds",
        "fields": [
            {"name": name, "type": name} for name in ("string", "bytes", "long", "int", "boolean")
        ],
    }
    codec = SingleObjectCodec(SchemaRegistry([register(schema)]), "AllKinds")
    rng = random.Random(5)
    for _ in range(3_000):
        record = random_record(rng, schema["fields"])  # type: ignore[arg-type]
        assert codec.encode(record) == codec.encode_with_fastavro(record)


@pytest.mark.parametrize(
    "change",
    [
        {"event_time": True},  # bool is an int to fastavro
        {"event_time": 2.0},  # fastavro writes a float for a long
        {"received_at": 2**63},  # out of range
        {"symbol": "x" * 10_000},  # longer than the length table
    ],
)
def test_values_the_compiled_writer_does_not_take_go_through_fastavro(
    change: dict[str, Any],
) -> None:
    codec = default_codec()
    record = dict(RECORD, **change)
    try:
        expected: bytes | None = codec.encode_with_fastavro(record)
    except EncodeError:
        expected = None
    if expected is None:
        with pytest.raises(EncodeError):
            codec.encode(record)
    else:
        assert codec.encode(record) == expected


@pytest.mark.parametrize(
    "record",
    [
        {k: v for k, v in RECORD.items() if k != "symbol"},
        dict(RECORD, symbol=b"BTCUSDT"),
        dict(RECORD, symbol=None),
        dict(RECORD, symbol="\ud800"),  # a lone surrogate cannot be UTF-8
        dict(RECORD, received_at=2**64),
    ],
)
def test_bad_records_still_raise_encode_error(record: dict[str, Any]) -> None:
    with pytest.raises(EncodeError, match="does not match"):
        default_codec().encode(record)


def test_defaults_come_from_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "WithDefault",
        "fields": [{"name": "a", "type": "string", "default": "x"}],
    }
    codec = SingleObjectCodec(SchemaRegistry([register(schema)]), "WithDefault")
    assert codec.encode({}) == codec.encode_with_fastavro({"a": "x"})


def test_other_schemas_are_not_compiled() -> None:
    nested = fastavro.parse_schema(
        {"type": "record", "name": "N", "fields": [{"name": "a", "type": ["null", "string"]}]}
    )
    assert compile_writer(nested, b"") is None
    assert compile_writer(fastavro.parse_schema("string"), b"") is None


@pytest.mark.parametrize("text", ["", "a", "x" * 63, "x" * 64, "é", "a" * 62 + "é", "\x7f", "\x80"])
def test_strings_around_the_ascii_run_limits_match_fastavro(text: str) -> None:
    """The one-encode path takes ASCII strings under 64 characters; anything else (64 or more,
    any non-ASCII character) goes the field-by-field way: the bytes are fastavro's either way."""
    codec = default_codec()
    for field in ("event_type", "symbol", "iso_timestamp"):
        record = dict(RECORD, **{field: text})
        assert codec.encode(record) == codec.encode_with_fastavro(record), (field, text)
