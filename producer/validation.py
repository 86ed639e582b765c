"""Turn one Binance combined-stream websocket message into records (MiniTicker, or Kline for a
``<symbol>@kline_1m`` stream, see kline_validation) and rejects."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from producer.kline_validation import kline_stream, validate_kline
from producer.payload_rules import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS
from producer.payload_rules import decimal_match as _decimal_match
from producer.payload_rules import kind as _kind
from producer.payload_rules import remember as _remember
from producer.payload_rules import short as _short
from producer.payload_rules import symbol_match as _symbol_match
from schemas.kline import Kline
from schemas.record import MiniTicker, iso_timestamp

EVENT_TYPE: Final = "24hrMiniTicker"
ARRAY_STREAM: Final = "!miniTicker@arr"
STREAM_SUFFIX: Final = "@miniTicker"

# Order is Binance key -> field; checked in this order so reasons are deterministic.
_DECIMAL_KEYS: Final = ("c", "o", "h", "l", "v", "q")
_REQUIRED_KEYS: Final = ("e", "E", "s", *_DECIMAL_KEYS)

# One regex call for all six decimals on the hot path; '|' cannot occur in a valid decimal.
# DECIMAL with possessive quantifiers, the same language (what follows a run of digits is
# never a digit, so giving digits back cannot help a match) at 30% less time per call.
_POSSESSIVE_DECIMAL: Final = r"[0-9]{1,20}+(?:\.[0-9]{1,18}+)?+"
six_decimals_match: Final = re.compile(r"\|".join([_POSSESSIVE_DECIMAL] * 6)).fullmatch
_stream_match: Final = re.compile(r"([A-Za-z0-9]{1,20})@miniTicker").fullmatch

# stream name -> (expected symbol upper-case, normalised stream_type); streams repeat.
_stream_cache: dict[str, tuple[str, str]] = {}
# symbol -> normalised stream_type, for array elements.
_stream_type_cache: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message, or one array element, that did not become a record, and why."""

    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class UnparsedMessage:
    """A websocket frame that was not valid JSON, as handed over by the source."""

    raw: str | bytes
    error: str


MarketRecord = MiniTicker | Kline
Validated = tuple[list[MarketRecord], list[Rejected]]


def validate_message(message: object, received_at_us: int) -> Validated:
    """Validate one combined-stream message; return its records and its rejects."""
    if type(message) is dict:
        stream = message.get("stream")
        data = message.get("data")
        if type(stream) is str and type(data) is dict:
            known = _stream_cache.get(stream)
            if known is None:
                # Not a miniTicker stream seen before: klines (and first sightings) only.
                kline = kline_stream(stream)
                if kline is not None:
                    return _kline_result(message, data, received_at_us, kline)
                known = _parse_stream(stream)
            if known is not None:
                result = _validate_payload(data, received_at_us, known[0], known[1])
                if isinstance(result, str):
                    return [], [Rejected(_dump(message), result)]
                return [result], []
    return _validate_slow(message, received_at_us)


def _validate_slow(message: object, received_at_us: int) -> Validated:
    """Handle everything but a well-formed single-symbol envelope: arrays and rejects."""
    if isinstance(message, UnparsedMessage):
        return [], [Rejected(_to_bytes(message.raw), f"malformed JSON: {message.error}")]
    if not isinstance(message, dict):
        return [], [Rejected(_dump(message), f"message is not a JSON object: {_kind(message)}")]
    for key in ("stream", "data"):
        if key not in message:
            return [], [Rejected(_dump(message), f"missing field {key!r}")]
    stream, data = message["stream"], message["data"]
    if not isinstance(stream, str):
        return [], [Rejected(_dump(message), f"field 'stream' is not a string: {_kind(stream)}")]
    if stream == ARRAY_STREAM:
        if not isinstance(data, list):
            reason = f"field 'data' is not an array: {_kind(data)}"
            return [], [Rejected(_dump(message), reason)]
        return _validate_array(data, received_at_us)
    kline, known = kline_stream(stream), _parse_stream(stream)
    if kline is None and known is None:
        return [], [Rejected(_dump(message), f"unsupported stream {_short(stream)}")]
    if not isinstance(data, dict):
        return [], [Rejected(_dump(message), f"field 'data' is not an object: {_kind(data)}")]
    if kline is not None:
        return _kline_result(message, data, received_at_us, kline)
    assert known is not None
    # A dict subclass lands here; it is valid JSON data all the same.
    result = _validate_payload(data, received_at_us, known[0], known[1])
    if isinstance(result, str):
        return [], [Rejected(_dump(message), result)]
    return [result], []


def _kline_result(
    message: dict[str, Any], data: dict[str, Any], received_at_us: int, stream: tuple[str, str]
) -> Validated:
    """The record or reject of one message of a ``<symbol>@kline_1m`` stream."""
    result = validate_kline(data, received_at_us, stream[0], stream[1])
    if isinstance(result, str):
        return [], [Rejected(_dump(message), result)]
    return [result], []


def _validate_array(elements: list[Any], received_at_us: int) -> Validated:
    """Validate each element of a !miniTicker@arr message on its own."""
    records: list[MarketRecord] = []
    rejects: list[Rejected] = []
    for element in elements:
        if not isinstance(element, dict):
            reason = f"array element is not a JSON object: {_kind(element)}"
            rejects.append(Rejected(_dump(element), reason))
            continue
        result = _validate_payload(element, received_at_us, None, None)
        if isinstance(result, str):
            rejects.append(Rejected(_dump(element), result))
        else:
            records.append(result)
    return records, rejects


def _validate_payload(
    data: dict[str, Any],
    received_at_us: int,
    expected_symbol: str | None,
    stream_type: str | None,
) -> MiniTicker | str:
    """Return the record for one miniTicker payload, or the reason it is rejected."""
    try:  # subscripts: cheaper than nine get() calls; a missing key is a reject
        event_type, event_time, symbol = data["e"], data["E"], data["s"]
        c, o, h, low, v, q = data["c"], data["o"], data["h"], data["l"], data["v"], data["q"]
    except KeyError:
        return _reject_reason(data, expected_symbol)
    if not (
        event_type == EVENT_TYPE
        and type(event_time) is int
        and MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS
        # The stream's symbol passed the symbol rule already (_parse_stream): equal is enough.
        and (
            symbol == expected_symbol
            if expected_symbol is not None
            else type(symbol) is str and _symbol_match(symbol) is not None
        )
        and type(c) is str
        and type(o) is str
        and type(h) is str
        and type(low) is str
        and type(v) is str
        and type(q) is str
        and six_decimals_match(f"{c}|{o}|{h}|{low}|{v}|{q}")
    ):
        return _reject_reason(data, expected_symbol)
    if stream_type is None:
        stream_type = _stream_type_cache.get(symbol)
        if stream_type is None:
            stream_type = _remember(_stream_type_cache, symbol, symbol.lower() + STREAM_SUFFIX)
    return {
        "event_type": EVENT_TYPE,
        "event_time": event_time,
        "stream_type": stream_type,
        "symbol": symbol,
        "close_price": c,
        "open_price": o,
        "high_price": h,
        "low_price": low,
        "base_volume": v,
        "quote_volume": q,
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": received_at_us,
    }


def _reject_reason(data: dict[str, Any], expected_symbol: str | None) -> str:
    """Name the first rule a payload breaks; same rules as the fast check in _validate_payload."""
    for key in _REQUIRED_KEYS:
        if key not in data:
            return f"missing field {key!r}"
    event_type, event_time, symbol = data["e"], data["E"], data["s"]
    if event_type != EVENT_TYPE:
        return f"unknown event type {_short(event_type)}"
    if type(event_time) is not int:
        return f"field 'E' is not an integer: {_kind(event_time)}"
    if not MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS:
        return f"field 'E' out of range (years 2017..2100): {event_time}"
    if type(symbol) is not str:
        return f"field 's' is not a string: {_kind(symbol)}"
    if not _symbol_match(symbol):
        return f"field 's' is not an upper-case symbol: {_short(symbol)}"
    if expected_symbol is not None and symbol != expected_symbol:
        return f"symbol {symbol!r} does not match stream symbol {expected_symbol.lower()!r}"
    for key in _DECIMAL_KEYS:
        value = data[key]
        if type(value) is not str:
            return f"field {key!r} must be a decimal string, got {_kind(value)}"
        if not _decimal_match(value):
            return f"field {key!r} is not a plain decimal: {_short(value)}"
    raise AssertionError("payload failed the fast check but broke no rule")  # pragma: no cover


def miniticker_stream(stream: str) -> tuple[str, str] | None:
    """(expected symbol, stream_type) of a ``<sym>@miniTicker`` stream name, else None."""
    return _stream_cache.get(stream) or _parse_stream(stream)


def _parse_stream(stream: str) -> tuple[str, str] | None:
    """Return (expected symbol, stream_type) for '<sym>@miniTicker', else None."""
    matched = _stream_match(stream)
    if matched is None:
        return None
    symbol = matched.group(1)
    parsed = (symbol.upper(), symbol.lower() + STREAM_SUFFIX)
    return _remember(_stream_cache, stream, parsed)


def _dump(value: object) -> bytes:
    """Serialise a parsed message compactly; fall back to repr for what JSON cannot hold."""
    try:
        return json.dumps(value, separators=(",", ":"), default=repr).encode()
    except (ValueError, TypeError, RecursionError):
        return repr(value).encode(errors="backslashreplace")


def _to_bytes(raw: str | bytes) -> bytes:
    """Return raw frame bytes; text frames are encoded as UTF-8."""
    return raw if isinstance(raw, bytes) else raw.encode(errors="backslashreplace")
