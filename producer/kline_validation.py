"""Turn the payload of one ``<symbol>@kline_1m`` combined-stream message into a Kline record, or
the reason it is rejected. Pure; ``validation.validate_message`` dispatches here on the stream.

Binance sends a kline event every second or two while the minute runs (``k.x`` false) and a
last one once it is over (``k.x`` true); all are records, the sinks keep the closed ones.
"""

from __future__ import annotations

import re
from typing import Any, Final

from producer.payload_rules import (
    DECIMAL,
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    decimal_match,
    kind,
    remember,
    short,
    symbol_match,
)
from schemas.kline import EVENT_TYPE, INTERVAL, STREAM_SUFFIX, Kline
from schemas.record import iso_timestamp

SOURCE: Final = "websocket"
MS_PER_MINUTE: Final = 60_000
# Trade ids and counts are Avro longs; Binance says -1 for "no trade id".
_LONG_END: Final = 2**63

# Checked in this order, so reasons are deterministic: Binance's order inside "k".
_REQUIRED_KEYS: Final = ("e", "E", "s", "k")
_KLINE_KEYS: Final = (
    "t",
    "T",
    "s",
    "i",
    "f",
    "L",
    "o",
    "c",
    "h",
    "l",
    "v",
    "n",
    "x",
    "q",
    "V",
    "Q",
)
_DECIMAL_KEYS: Final = ("o", "c", "h", "l", "v", "q", "V", "Q")
# One regex call for all eight decimals; '|' cannot occur in a valid decimal.
_eight_decimals_match: Final = re.compile(r"\|".join([DECIMAL] * 8)).fullmatch
_stream_match: Final = re.compile(r"([A-Za-z0-9]{1,20})@kline_1m").fullmatch

# stream name -> (expected symbol upper-case, normalised stream_type); streams repeat.
_stream_cache: dict[str, tuple[str, str]] = {}


def kline_stream(stream: str) -> tuple[str, str] | None:
    """(expected symbol, stream_type) of a ``<sym>@kline_1m`` stream name, else None."""
    known = _stream_cache.get(stream)
    if known is not None:
        return known
    matched = _stream_match(stream)
    if matched is None:
        return None
    symbol = matched.group(1)
    return remember(_stream_cache, stream, (symbol.upper(), symbol.lower() + STREAM_SUFFIX))


def validate_kline(
    data: dict[str, Any], received_at_us: int, expected_symbol: str, stream_type: str
) -> Kline | str:
    """The record of one kline payload (the message's ``data``), or why it is rejected."""
    get = data.get
    event_time, symbol, k = get("E"), get("s"), get("k")
    if not (
        get("e") == EVENT_TYPE
        and type(event_time) is int
        and MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS
        and symbol == expected_symbol  # the stream's symbol: upper-case letters and digits
        and type(k) is dict
    ):
        return _reject_reason(data, expected_symbol)
    kget = k.get
    open_time, close_time, first, last = kget("t"), kget("T"), kget("f"), kget("L")
    trades, closed = kget("n"), kget("x")
    o, c, h, low, v, q = kget("o"), kget("c"), kget("h"), kget("l"), kget("v"), kget("q")
    taker_base, taker_quote = kget("V"), kget("Q")
    if not (
        type(open_time) is int
        and MIN_EVENT_TIME_MS <= open_time < MAX_EVENT_TIME_MS
        and open_time % MS_PER_MINUTE == 0
        and type(close_time) is int
        and close_time == open_time + MS_PER_MINUTE - 1
        and kget("s") == symbol
        and kget("i") == INTERVAL
        and type(first) is int
        and -1 <= first < _LONG_END
        and type(last) is int
        and -1 <= last < _LONG_END
        and type(trades) is int
        and 0 <= trades < _LONG_END
        and type(closed) is bool
        and type(o) is str
        and type(c) is str
        and type(h) is str
        and type(low) is str
        and type(v) is str
        and type(q) is str
        and type(taker_base) is str
        and type(taker_quote) is str
        and _eight_decimals_match(f"{o}|{c}|{h}|{low}|{v}|{q}|{taker_base}|{taker_quote}")
    ):
        return _reject_reason(data, expected_symbol)
    return {
        "event_type": EVENT_TYPE,
        "event_time": event_time,
        "stream_type": stream_type,
        "symbol": symbol,
        "interval": INTERVAL,
        "open_time": open_time,
        "close_time": close_time,
        "first_trade_id": first,
        "last_trade_id": last,
        "open_price": o,
        "close_price": c,
        "high_price": h,
        "low_price": low,
        "base_volume": v,
        "quote_volume": q,
        "trades": trades,
        "closed": closed,
        "taker_buy_base_volume": taker_base,
        "taker_buy_quote_volume": taker_quote,
        "source": SOURCE,
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": received_at_us,
    }


def _reject_reason(data: dict[str, Any], expected_symbol: str) -> str:
    """Name the first rule a payload breaks; the same rules as the fast check above."""
    for key in _REQUIRED_KEYS:
        if key not in data:
            return f"missing field {key!r}"
    event_type, event_time, symbol, k = data["e"], data["E"], data["s"], data["k"]
    if event_type != EVENT_TYPE:
        return f"unknown event type {short(event_type)} on a kline stream"
    if type(event_time) is not int:
        return f"field 'E' is not an integer: {kind(event_time)}"
    if not MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS:
        return f"field 'E' out of range (years 2017..2100): {event_time}"
    if type(symbol) is not str:
        return f"field 's' is not a string: {kind(symbol)}"
    if not symbol_match(symbol):
        return f"field 's' is not an upper-case symbol: {short(symbol)}"
    if symbol != expected_symbol:
        return f"symbol {symbol!r} does not match stream symbol {expected_symbol.lower()!r}"
    if type(k) is not dict:
        return f"field 'k' is not an object: {kind(k)}"
    return _kline_reason(k, symbol)


def _kline_reason(k: dict[str, Any], symbol: str) -> str:
    """The first rule the kline object ``k`` breaks."""
    for key in _KLINE_KEYS:
        if key not in k:
            return f"missing field 'k.{key}'"
    for key in ("t", "T", "f", "L", "n"):
        if type(k[key]) is not int:
            return f"field 'k.{key}' is not an integer: {kind(k[key])}"
    open_time, close_time = k["t"], k["T"]
    if not MIN_EVENT_TIME_MS <= open_time < MAX_EVENT_TIME_MS:
        return f"field 'k.t' out of range (years 2017..2100): {open_time}"
    if open_time % MS_PER_MINUTE:
        return f"field 'k.t' is not a whole minute: {open_time}"
    if close_time != open_time + MS_PER_MINUTE - 1:
        return f"field 'k.T' is not k.t + 59999: {close_time} for k.t {open_time}"
    if k["s"] != symbol:
        return f"field 'k.s' {short(k['s'])} does not match 's' {symbol!r}"
    if k["i"] != INTERVAL:
        return f"unsupported interval {short(k['i'])} (only 1m)"
    for key in ("f", "L"):
        if not -1 <= k[key] < _LONG_END:
            return f"field 'k.{key}' is not a trade id (-1 or more): {short(k[key])}"
    if not 0 <= k["n"] < _LONG_END:
        return f"field 'k.n' is not a number of trades: {short(k['n'])}"
    if type(k["x"]) is not bool:
        return f"field 'k.x' is not a boolean: {kind(k['x'])}"
    for key in _DECIMAL_KEYS:
        value = k[key]
        if type(value) is not str:
            return f"field 'k.{key}' must be a decimal string, got {kind(value)}"
        if not decimal_match(value):
            return f"field 'k.{key}' is not a plain decimal: {short(value)}"
    raise AssertionError("kline failed the fast check but broke no rule")  # pragma: no cover
