"""ClockLongs writes the codec's long bytes whatever order values come in."""

from __future__ import annotations

import io
import random

import fastavro

from schemas.codec import ClockLongs, encode_long


def fastavro_long(value: int) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema("long"), value)
    return buffer.getvalue()


def test_same_bytes_as_the_codec_and_fastavro_in_any_order() -> None:
    rng = random.Random(11)
    edges = [0, 1, -1, 8191, 8192, -8193, 2**14, 2**28, 2**42, 2**56, 2**63 - 1, -(2**63)]
    values = [*edges, *edges[::-1]]
    now_us = 1_795_000_000_000_000
    values += [now_us + rng.randrange(100_000) for _ in range(2_000)]  # a clock, jittering
    values += [now_us // 1000 + i for i in range(0, 40_000, 7)]  # epoch ms, past 8 s marks
    values += [rng.randrange(-(2**63), 2**63) for _ in range(2_000)]
    longs = ClockLongs()
    for value in values:
        assert longs.encode(value) == encode_long(value) == fastavro_long(value), value
