"""jsonl_line writes with orjson where that gives the same bytes as the stdlib encoder every
object was written with so far (ensure_ascii, compact), and with the stdlib everywhere else:
replays and upgrades rewrite objects byte for byte."""

from __future__ import annotations

import enum
import json
import random
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumers.s3.format import jsonl_line
from schemas.codec import default_codec
from tests.schemas.test_compiled_writer import random_record


def reference(fields: dict[str, Any]) -> bytes:
    """The line as the stdlib encoder writes it (the encoding of every object so far)."""
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii") + b"\n"


def outcome(encode: Callable[[], bytes]) -> bytes | type[BaseException]:
    try:
        return encode()
    except (TypeError, ValueError, RecursionError) as err:
        return type(err)


def assert_same(fields: dict[str, Any]) -> None:
    order = tuple(fields)
    assert outcome(lambda: jsonl_line(fields, order)) == outcome(lambda: reference(fields)), fields


def test_every_character_orjson_writes_as_ascii_is_written_as_the_stdlib_writes_it() -> None:
    # JSON escapes strings character by character, so a line is equal whenever each of its
    # characters is: the fast path takes orjson's line only when it is ASCII without DEL.
    for code in range(sys.maxunicode + 1):
        text = chr(code)
        try:
            fast = orjson.dumps(text)
        except orjson.JSONEncodeError:
            continue  # a lone surrogate: the stdlib writes it
        if fast.isascii() and b"\x7f" not in fast:
            assert fast.decode() == json.dumps(text), hex(code)


def test_each_ascii_character_and_some_beyond_in_keys_and_values() -> None:
    samples = [chr(code) for code in range(0x80)]
    samples += [
        "\x7f",
        "é",
        "\u2028",
        "\u2029",
        "\ufeff",
        "\ud800",
        "\udfff",
        "€",
        "😀",
        "\U0010ffff",
    ]
    for text in samples:
        assert_same({"k": text})
        assert_same({text: 1, "v": f"a{text}b"})
    assert_same({"all": "".join(chr(code) for code in range(0x7F))})


class Side(enum.IntEnum):
    BUY = 1


class Name(str):
    pass


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Mostly what orjson takes (ASCII strings, control characters included, and 64-bit ints),
    now and then an edge where orjson and the stdlib differ or refuse."""
    roll = rng.random()
    if roll < 0.45:
        return "".join(chr(rng.randrange(0x80)) for _ in range(rng.randrange(12)))
    if roll < 0.6:
        return f"{rng.randrange(10**9)}.{rng.randrange(10**8):08d}"  # a decimal string
    if roll < 0.75:
        return rng.randrange(-(2**63), 2**64)
    if roll < 0.8:
        return rng.choice((2**63 - 1, -(2**63), 2**64 - 1, 0, -1, True, False, None))
    edges: list[Any] = [
        "".join(chr(rng.choice((rng.randrange(0x110000), 0x7F))) for _ in range(3)),
        rng.choice((2**64, -(2**63) - 1, 10**30, rng.randrange(-(2**70), 2**70))),
        rng.choice((0.1, 1e-5, 1e16, 1.0, -0.0, float("nan"), float("inf"))),
        rng.choice((Side.BUY, Name("x"), b"bytes", (1, "a"), {1: "non-str key"})),
    ]
    if depth < 2:
        edges += [
            [random_value(rng, depth + 1) for _ in range(rng.randrange(3))],
            {"n": random_value(rng, depth + 1)},
        ]
    return rng.choice(edges)


def random_key(rng: random.Random) -> Any:
    if rng.random() < 0.9:
        return "".join(chr(rng.randrange(0x80)) for _ in range(rng.randrange(1, 15)))
    return rng.choice(("ключ", "k\x7f", Name("key"), 7))


@pytest.mark.parametrize("seed", range(4))
def test_random_records_of_every_kind_of_value(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2_500):
        fields = {random_key(rng): random_value(rng) for _ in range(rng.randrange(1, 6))}
        assert_same(fields)


def test_records_decoded_from_avro_are_written_as_before() -> None:
    codec = default_codec()
    rng = random.Random(5)
    for name in ("crypto_live.v1.MiniTicker", "crypto_live.v1.Kline"):
        writer = codec.for_writer(name)
        for _ in range(300):
            record = random_record(rng, writer.writer.parsed["fields"])
            _, decoded = codec.decode_typed(writer.encode(record))
            assert jsonl_line(decoded, tuple(decoded)) == reference(decoded)
