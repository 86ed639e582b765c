"""Behaviour of producer.validation: records, normalisation and every reject reason."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from producer.payload_rules import decimal_match
from producer.validation import (
    Rejected,
    UnparsedMessage,
    six_decimals_match,
    validate_message,
)
from schemas.record import MiniTicker

RECEIVED_AT = 1_763_868_218_500_123
EVENT_TIME = 1_763_868_218_123  # 2025-11-23T03:23:38.123Z
HUGE = "1" * 21  # one digit more than the 20 allowed before the point
TOO_PRECISE = "1." + "1" * 19  # one digit more than the 18 allowed after the point


def payload(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "24hrMiniTicker",
        "E": EVENT_TIME,
        "s": "BTCUSDT",
        "c": "87123.45000000",
        "o": "86000.01000000",
        "h": "88000.00000000",
        "l": "85000.00000000",
        "v": "12345.67890000",
        "q": "1075432123.12345678",
    }
    data.update(overrides)
    return data


def envelope(data: object, stream: object = "btcusdt@miniTicker") -> dict[str, Any]:
    return {"stream": stream, "data": data}


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def reject_reason(message: object) -> str:
    records, rejects = validate_message(message, RECEIVED_AT)
    assert records == []
    assert len(rejects) == 1
    return rejects[0].reason


EXPECTED_BTC: MiniTicker = {
    "event_type": "24hrMiniTicker",
    "event_time": EVENT_TIME,
    "stream_type": "btcusdt@miniTicker",
    "symbol": "BTCUSDT",
    "close_price": "87123.45000000",
    "open_price": "86000.01000000",
    "high_price": "88000.00000000",
    "low_price": "85000.00000000",
    "base_volume": "12345.67890000",
    "quote_volume": "1075432123.12345678",
    "iso_timestamp": "2025-11-23T03:23:38.123Z",
    "received_at": RECEIVED_AT,
}


def test_valid_single_symbol_message_becomes_one_record() -> None:
    assert validate_message(envelope(payload()), RECEIVED_AT) == ([EXPECTED_BTC], [])


def test_stream_type_is_normalised_and_symbol_matched_case_insensitively() -> None:
    records, rejects = validate_message(envelope(payload(), "BTCUSDT@miniTicker"), RECEIVED_AT)
    assert rejects == []
    assert [r["stream_type"] for r in records] == ["btcusdt@miniTicker"]


def test_decimal_strings_are_kept_exactly_as_received() -> None:
    data = payload(c="0.00000100", o="007", h="1", l="0.0", v="99999999999999999999")
    (record,), _ = validate_message(envelope(data), RECEIVED_AT)
    assert (record["close_price"], record["open_price"], record["high_price"]) == (
        "0.00000100",
        "007",
        "1",
    )
    assert (record["low_price"], record["base_volume"]) == ("0.0", "99999999999999999999")


def test_extra_keys_are_ignored() -> None:
    records, rejects = validate_message(
        {"stream": "btcusdt@miniTicker", "data": payload(x="extra"), "id": 7}, RECEIVED_AT
    )
    assert (records, rejects) == ([EXPECTED_BTC], [])


@pytest.mark.parametrize(
    ("event_time", "iso"),
    [
        (1_483_228_800_000, "2017-01-01T00:00:00.000Z"),
        (1_700_000_000_001, "2023-11-14T22:13:20.001Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (4_133_980_799_999, "2100-12-31T23:59:59.999Z"),
    ],
)
def test_iso_timestamp_is_rfc3339_utc_with_millis(event_time: int, iso: str) -> None:
    (record,), _ = validate_message(envelope(payload(E=event_time)), RECEIVED_AT)
    assert record["iso_timestamp"] == iso
    parsed = datetime.fromisoformat(iso)
    assert int(parsed.timestamp() * 1000) == event_time


def test_iso_timestamp_matches_datetime_over_many_times() -> None:
    for event_time in range(EVENT_TIME, EVENT_TIME + 5_000_000, 997):
        (record,), _ = validate_message(envelope(payload(E=event_time)), RECEIVED_AT)
        expected = datetime.fromtimestamp(event_time / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert record["iso_timestamp"] == f"{expected}.{event_time % 1000:03d}Z"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({k: v for k, v in payload().items() if k != "c"}, "missing field 'c'"),
        ({k: v for k, v in payload().items() if k != "E"}, "missing field 'E'"),
        ({k: v for k, v in payload().items() if k != "e"}, "missing field 'e'"),
        ({k: v for k, v in payload().items() if k != "q"}, "missing field 'q'"),
        (payload(e="24hrTicker"), "unknown event type '24hrTicker'"),
        (payload(e=None), "unknown event type None"),
        (payload(E="1763868218123"), "field 'E' is not an integer: string"),
        (payload(E=1763868218123.0), "field 'E' is not an integer: number"),
        (payload(E=True), "field 'E' is not an integer: boolean"),
        (payload(E=1_483_228_799_999), "field 'E' out of range (years 2017..2100): 1483228799999"),
        (payload(E=4_133_980_800_000), "field 'E' out of range (years 2017..2100): 4133980800000"),
        (payload(E=1_763_868_218), "field 'E' out of range (years 2017..2100): 1763868218"),
        (payload(s=None), "field 's' is not a string: null"),
        (payload(s="btcusdt"), "field 's' is not an upper-case symbol: 'btcusdt'"),
        (payload(s=""), "field 's' is not an upper-case symbol: ''"),
        (payload(s="BTC-USDT"), "field 's' is not an upper-case symbol: 'BTC-USDT'"),
        (payload(s="A" * 21), "field 's' is not an upper-case symbol: 'AAAAAAAAAAAAAAAAAAAAA'"),
        (payload(c=87123.45), "field 'c' must be a decimal string, got number"),
        (payload(o=86000), "field 'o' must be a decimal string, got number"),
        (payload(h=True), "field 'h' must be a decimal string, got boolean"),
        (payload(l=None), "field 'l' must be a decimal string, got null"),
        (payload(v=["1"]), "field 'v' must be a decimal string, got array"),
        (payload(c="-1.5"), "field 'c' is not a plain decimal: '-1.5'"),
        (payload(c="+1.5"), "field 'c' is not a plain decimal: '+1.5'"),
        (payload(o="1e30"), "field 'o' is not a plain decimal: '1e30'"),
        (payload(h="NaN"), "field 'h' is not a plain decimal: 'NaN'"),
        (payload(l="Infinity"), "field 'l' is not a plain decimal: 'Infinity'"),
        (payload(v=HUGE), f"field 'v' is not a plain decimal: '{HUGE}'"),
        (payload(q=TOO_PRECISE), f"field 'q' is not a plain decimal: '{TOO_PRECISE}'"),
        (payload(c=""), "field 'c' is not a plain decimal: ''"),
        (payload(c="1."), "field 'c' is not a plain decimal: '1.'"),
        (payload(c=".5"), "field 'c' is not a plain decimal: '.5'"),
        (payload(c="1.5\n"), "field 'c' is not a plain decimal: '1.5\\n'"),
        (payload(c=" 1.5"), "field 'c' is not a plain decimal: ' 1.5'"),
        (payload(c="1,5"), "field 'c' is not a plain decimal: '1,5'"),
        (payload(c="\u0663"), "field 'c' is not a plain decimal: '\u0663'"),
        (payload(c="1|2"), "field 'c' is not a plain decimal: '1|2'"),
        (payload(c="9" * 60), "field 'c' is not a plain decimal: '" + "9" * 36 + "..."),
    ],
)
def test_payload_rejects_name_the_field(data: dict[str, Any], reason: str) -> None:
    message = envelope(data)
    records, rejects = validate_message(message, RECEIVED_AT)
    assert records == []
    assert rejects == [Rejected(raw=compact(message), reason=reason)]


def test_first_broken_rule_is_reported() -> None:
    data = payload(e="other", c=1.5)
    assert reject_reason(envelope(data)) == "unknown event type 'other'"


def test_symbol_not_matching_stream_is_rejected() -> None:
    message = envelope(payload(s="ETHUSDT"))
    assert reject_reason(message) == ("symbol 'ETHUSDT' does not match stream symbol 'btcusdt'")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ([1, 2], "message is not a JSON object: array"),
        ("text", "message is not a JSON object: string"),
        (None, "message is not a JSON object: null"),
        (42, "message is not a JSON object: number"),
        ({"data": payload()}, "missing field 'stream'"),
        ({"stream": "btcusdt@miniTicker"}, "missing field 'data'"),
        ({"stream": 5, "data": payload()}, "field 'stream' is not a string: number"),
        (envelope(payload(), "btcusdt@ticker"), "unsupported stream 'btcusdt@ticker'"),
        (envelope(payload(), "btcusdt@miniticker"), "unsupported stream 'btcusdt@miniticker'"),
        (envelope(payload(), "!ticker@arr"), "unsupported stream '!ticker@arr'"),
        (envelope(payload(), "@miniTicker"), "unsupported stream '@miniTicker'"),
        (envelope(payload(), "!miniTicker@arr"), "field 'data' is not an array: object"),
        (envelope([payload()]), "field 'data' is not an object: array"),
        (envelope("x"), "field 'data' is not an object: string"),
    ],
)
def test_envelope_rejects(message: object, reason: str) -> None:
    assert validate_message(message, RECEIVED_AT) == (
        [],
        [Rejected(raw=compact(message), reason=reason)],
    )


def test_unparsed_message_is_rejected_with_its_raw_bytes() -> None:
    message = UnparsedMessage(raw='{"stream": "btc', error="Unterminated string at char 11")
    assert validate_message(message, RECEIVED_AT) == (
        [],
        [Rejected(raw=b'{"stream": "btc', reason="malformed JSON: Unterminated string at char 11")],
    )
    binary = UnparsedMessage(raw=b"\xff\x00", error="invalid start byte")
    _, rejects = validate_message(binary, RECEIVED_AT)
    assert rejects == [Rejected(raw=b"\xff\x00", reason="malformed JSON: invalid start byte")]


def test_non_json_object_still_gets_raw_bytes() -> None:
    _, rejects = validate_message({1, 2}, RECEIVED_AT)
    assert rejects == [Rejected(raw=b'"{1, 2}"', reason="message is not a JSON object: set")]


def test_array_stream_yields_one_record_per_element_and_rejects_only_bad_ones() -> None:
    eth = payload(s="ETHUSDT", c="3000.1")
    bad = payload(s="SOLUSDT", c=1.5)
    message = envelope([payload(), bad, "junk", eth], "!miniTicker@arr")
    records, rejects = validate_message(message, RECEIVED_AT)
    assert records == [
        EXPECTED_BTC,
        {
            **EXPECTED_BTC,
            "symbol": "ETHUSDT",
            "stream_type": "ethusdt@miniTicker",
            "close_price": "3000.1",
        },
    ]
    assert rejects == [
        Rejected(raw=compact(bad), reason="field 'c' must be a decimal string, got number"),
        Rejected(raw=b'"junk"', reason="array element is not a JSON object: string"),
    ]


def test_empty_array_gives_nothing() -> None:
    assert validate_message(envelope([], "!miniTicker@arr"), RECEIVED_AT) == ([], [])


def test_many_distinct_streams_stay_correct_past_the_cache_limit() -> None:
    for i in range(5000):
        symbol = f"S{i}"
        records, _ = validate_message(
            envelope(payload(s=symbol), f"{symbol.lower()}@miniTicker"), RECEIVED_AT
        )
        assert [r["stream_type"] for r in records] == [f"s{i}@miniTicker"]


def test_the_hot_path_six_decimal_rule_is_the_decimal_rule() -> None:
    """six_decimals_match (possessive quantifiers) accepts exactly six DECIMALs joined by '|'."""
    rng = random.Random(3)

    def digits(low: int, high: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(low, high)))

    def value() -> str:
        if rng.random() < 0.8:  # near the rule: 0..21 digits, a point, 0..19 digits
            return digits(0, 21) + rng.choice(["", ".", "." + digits(0, 19), "x"])
        return "".join(rng.choice("0123456789.x|") for _ in range(rng.randint(0, 40)))

    accepted = 0
    for _ in range(20_000):
        values = [value() for _ in range(6)]
        expected = all(decimal_match(v) for v in values)
        assert (six_decimals_match("|".join(values)) is not None) == expected, values
        accepted += expected
    assert accepted > 50  # six valid values at once are rare; each rule is hit often
