"""The hot path takes exactly what validate_message accepts and writes exactly the codec's bytes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from producer.miniticker_encoder import Encoded, MiniTickerEncoder
from producer.payload_rules import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS
from producer.validation import validate_message
from schemas.codec import KLINE_SCHEMA, default_codec

CODEC = default_codec()
RECEIVED_AT = 1_763_868_218_500_123

DECIMALS = [
    "0",
    "1",
    "87123.45000000",
    "1" * 20,
    "1" * 20 + "." + "9" * 18,
    "1" * 21,  # too many digits before the point
    "1." + "1" * 19,  # too many after
    "1.",
    ".5",
    "-1",
    "1e5",
    "١٢٣",  # Arabic-Indic digits: not [0-9]
    "12 ",
    "",
    "0.00000001",
]
SYMBOLS = ["BTCUSDT", "ETHBTC", "A", "X" * 20, "X" * 21, "btcusdt", "BTC-USDT", "BTCÜSDT", ""]
EVENT_TIMES: list[Any] = [
    1_763_868_218_123,
    MIN_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS - 1,
    MAX_EVENT_TIME_MS - 1,
    MAX_EVENT_TIME_MS,
    True,
    1.763e12,
    "1763868218123",
    None,
]


def payload(rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "24hrMiniTicker" if rng.random() < 0.9 else rng.choice(["kline", "", 1]),
        "E": EVENT_TIMES[0] + rng.randrange(10**9)
        if rng.random() < 0.7
        else rng.choice(EVENT_TIMES),
        "s": "BTCUSDT" if rng.random() < 0.6 else rng.choice(SYMBOLS),
    }
    for key in "cohlvq":
        data[key] = (
            rng.choice(DECIMALS[:5]) if rng.random() < 0.9 else rng.choice([*DECIMALS, 1, None])
        )
    if rng.random() < 0.05:
        del data[rng.choice(list(data))]
    return data


def message(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.45:
        data = payload(rng)
        symbol = data.get("s") if rng.random() < 0.9 else "ETHUSDT"
        stream = f"{str(symbol).lower()}@miniTicker" if rng.random() < 0.95 else "btcusdt@kline_1m"
        return {"stream": stream, "data": data}
    if roll < 0.9:
        elements: list[object] = [payload(rng) for _ in range(rng.randrange(0, 5))]
        if rng.random() < 0.05:
            elements.append(rng.choice([None, [], "x"]))
        return {"stream": "!miniTicker@arr", "data": elements}
    return rng.choice([None, [], {"stream": 1, "data": {}}, {"data": {}}, {"stream": "x@y"}])


def reference(parsed: object) -> list[Encoded] | None:
    """What validate_message + the codec make of a message, or None if anything is rejected."""
    records, rejects = validate_message(parsed, RECEIVED_AT)
    if rejects or any(r["event_type"] != "24hrMiniTicker" for r in records):
        return None
    return [(str(r["symbol"]), CODEC.encode(r)) for r in records]


def test_the_shipped_schema_takes_the_hot_path() -> None:
    assert MiniTickerEncoder(CODEC).enabled
    assert not MiniTickerEncoder(CODEC.for_writer(KLINE_SCHEMA)).enabled


@pytest.mark.parametrize("seed", range(4))
def test_same_records_and_bytes_as_validate_and_encode(seed: int) -> None:
    rng = random.Random(seed)
    encoder = MiniTickerEncoder(CODEC)
    taken = 0
    for _ in range(3_000):
        parsed = message(rng)
        out: list[Encoded] = [("before", b"")]
        expected = reference(parsed)
        if encoder.encode_message(parsed, RECEIVED_AT, out):
            taken += 1
            assert out[1:] == expected, parsed
        else:
            assert out == [("before", b"")], "a refused message leaves out unchanged"
            # Refused: validate_message rejects something, or it is not a miniTicker message.
            assert expected is None, parsed
    assert taken > 500  # the generator makes mostly valid messages


def test_an_array_with_one_reject_is_left_whole_to_the_validator() -> None:
    good = {"e": "24hrMiniTicker", "E": 1_763_868_218_123, "s": "BTCUSDT"}
    good |= dict.fromkeys("cohlvq", "1.5")
    frame = {"stream": "!miniTicker@arr", "data": [good, good | {"c": "x"}]}
    out: list[Encoded] = []
    assert not MiniTickerEncoder(CODEC).encode_message(frame, RECEIVED_AT, out)
    assert out == []


def test_another_writer_schema_turns_it_off() -> None:
    codec = CODEC.for_writer(KLINE_SCHEMA)
    out: list[Encoded] = []
    frame = {"stream": "!miniTicker@arr", "data": []}
    assert not MiniTickerEncoder(codec).encode_message(frame, RECEIVED_AT, out)
