"""The reader compiled for a record schema returns exactly fastavro's records, and leaves
anything it is not sure of (corrupt or trailing bytes) to fastavro, so its errors stay."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest

from schemas.avro_reader import compile_reader
from schemas.codec import (
    HEADER_SIZE,
    DecodeError,
    RegisteredSchema,
    SchemaRegistry,
    SingleObjectCodec,
    default_codec,
    register,
)
from tests.schemas.test_codec import RECORD
from tests.schemas.test_compiled_writer import random_record

ALL_KINDS = {
    "type": "record",
    "name": "AllKinds",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "n", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "t", "type": "boolean"},
        {"name": "e", "type": "string"},
    ],
}


def fastavro_read(schema: RegisteredSchema, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), schema.parsed, schema.parsed)


def codecs() -> list[tuple[SingleObjectCodec, RegisteredSchema]]:
    codec = default_codec()
    registry = SchemaRegistry.from_directory()
    all_kinds = SingleObjectCodec(SchemaRegistry([register(ALL_KINDS)]), "AllKinds")
    out = [
        (codec.for_writer(name), registry.by_name(name))
        for name in ("crypto_live.v1.MiniTicker", "crypto_live.v1.Kline")
    ]
    return [*out, (all_kinds, all_kinds.writer)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_random_records_read_as_fastavro_reads_them(index: int) -> None:
    codec, schema = codecs()[index]
    read = compile_reader(schema.parsed)
    assert read is not None
    rng = random.Random(index)
    for _ in range(1_000):
        data = codec.encode(random_record(rng, schema.parsed["fields"]))
        expected = fastavro_read(schema, data)
        assert read(data, HEADER_SIZE) == expected
        assert codec.decode(data) == expected
        assert list(codec.decode(data)) == list(expected)  # field order too (the JSONL order)


def test_the_sample_record_reads_back() -> None:
    codec = default_codec()
    assert codec.decode(codec.encode(RECORD)) == RECORD
    assert codec.decode_typed(codec.encode(RECORD)) == ("crypto_live.v1.MiniTicker", RECORD)


def test_truncated_trailing_and_flipped_bytes_keep_fastavro_errors() -> None:
    codec, schema = codecs()[2]
    read = compile_reader(schema.parsed)
    assert read is not None
    rng = random.Random(3)
    for _ in range(150):
        data = codec.encode(random_record(rng, schema.parsed["fields"]))
        corrupt = [data[:cut] for cut in range(HEADER_SIZE, len(data))]
        corrupt.append(data + b"\x00")
        flipped = bytearray(data)
        flipped[rng.randrange(HEADER_SIZE, len(data))] ^= 1 << rng.randrange(8)
        corrupt.append(bytes(flipped))
        for bad in corrupt:
            fast = read(bad, HEADER_SIZE)
            try:
                expected = fastavro_read(schema, bad)
                complete = (
                    len(codec.encode(expected)) == len(bad) if isinstance(expected, dict) else False
                )
            except Exception:  # fastavro raises many types on corrupt input
                expected, complete = None, False
            if fast is not None:  # what the compiled reader takes, fastavro reads the same
                assert complete and fast == expected
            else:
                try:
                    decoded = codec.decode(bad)
                except DecodeError:
                    continue
                assert decoded == expected  # fastavro took it (a value only it accepts)


def test_an_older_writer_is_resolved_by_fastavro() -> None:
    old = register({**ALL_KINDS, "fields": ALL_KINDS["fields"][:-1]})
    new = register(
        {
            **ALL_KINDS,
            "fields": [*ALL_KINDS["fields"][:-1], {"name": "e", "type": "string", "default": "x"}],
        }
    )
    registry = SchemaRegistry([old, new])
    writer = SingleObjectCodec(SchemaRegistry([old]), "AllKinds")
    record = {"s": "a", "b": b"", "n": 1, "i": 2, "t": True}
    data = writer.encode(record)
    assert SingleObjectCodec(registry, "AllKinds").decode(data, new) == {**record, "e": "x"}


def test_other_schemas_are_not_compiled() -> None:
    assert (
        compile_reader(
            {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "string"]}]}
        )
        is None
    )
    assert (
        compile_reader({"type": "record", "name": "F", "fields": [{"name": "f", "type": "double"}]})
        is None
    )
    assert compile_reader("string") is None


def test_decode_typed_resolves_an_older_writer_every_time() -> None:
    old = register({**ALL_KINDS, "fields": ALL_KINDS["fields"][:-1]})
    new = register(
        {
            **ALL_KINDS,
            "fields": [*ALL_KINDS["fields"][:-1], {"name": "e", "type": "string", "default": "x"}],
        }
    )
    codec = SingleObjectCodec(SchemaRegistry([old, new]), "AllKinds")
    record = {"s": "a", "b": b"", "n": 1, "i": 2, "t": True}
    old_data = SingleObjectCodec(SchemaRegistry([old]), "AllKinds").encode(record)
    new_data = codec.encode({**record, "e": "y"})
    for _ in range(2):  # the second time after the newest writer's fast path is set up
        assert codec.decode_typed(new_data) == ("AllKinds", {**record, "e": "y"})
        assert codec.decode_typed(old_data) == ("AllKinds", {**record, "e": "x"})


def test_decode_typed_keeps_fastavro_errors_after_the_fast_path_is_set_up() -> None:
    codec = default_codec()
    data = codec.encode(RECORD)
    assert codec.decode_typed(data)[1] == RECORD
    for bad in (data[:-1], data + b"\x00", data[:HEADER_SIZE], b"\xc3\x02" + data[2:]):
        with pytest.raises(DecodeError):
            codec.decode_typed(bad)
