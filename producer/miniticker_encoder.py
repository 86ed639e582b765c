"""The producer's hot path: a valid miniTicker message validated and Avro-encoded in one step.

``validate_message`` builds a record dict and ``SingleObjectCodec.encode`` walks it again; for
the message that is almost every message (a well-formed miniTicker envelope or
``!miniTicker@arr`` frame) this does both at once, with no record dict, caching what repeats
(each symbol's stream_type and symbol bytes, the event time's ISO second, the receive time).
It takes exactly what ``validate_message`` accepts and writes exactly the bytes the codec
writes (tests/producer/test_miniticker_encoder.py checks both); anything else (a reject, a
kline, a stream not seen before) it leaves to them, so reasons and dead letters stay theirs.
"""

from __future__ import annotations

from typing import Any, Final

from producer.payload_rules import CACHE_LIMIT, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS
from producer.payload_rules import symbol_match as _symbol_match
from producer.validation import ARRAY_STREAM, EVENT_TYPE, STREAM_SUFFIX, miniticker_stream
from producer.validation import six_decimals_match as _six_decimals_match
from schemas.codec import (
    MINITICKER_SCHEMA,
    SHORT_STRING_LENGTHS,
    ClockLongs,
    SingleObjectCodec,
    encode_long,
)
from schemas.record import second_prefix

# The writer schema this hot path writes; any other (a new version) turns it off.
FIELDS: Final = (
    ("event_type", "string"),
    ("event_time", "long"),
    ("stream_type", "string"),
    ("symbol", "string"),
    ("close_price", "string"),
    ("open_price", "string"),
    ("high_price", "string"),
    ("low_price", "string"),
    ("base_volume", "string"),
    ("quote_volume", "string"),
    ("iso_timestamp", "string"),
    ("received_at", "long"),
)
_MILLIS: Final = tuple(f"{n:03d}" for n in range(1000))
# iso_timestamp is always 24 characters (years 2017..2100): its Avro length as one character.
_ISO_LENGTH: Final = SHORT_STRING_LENGTHS[24]

Encoded = tuple[str, bytes]  # (partition key = symbol, single-object bytes)


class MiniTickerEncoder:
    """Validates and encodes miniTicker messages whole; see the module docstring."""

    __slots__ = (
        "_event_times",
        "_head",
        "_iso",
        "_received_times",
        "_symbols",
        "_time",
        "_time_long",
        "enabled",
    )

    def __init__(self, codec: SingleObjectCodec) -> None:
        writer = codec.writer
        fields = tuple((f["name"], f["type"]) for f in writer.parsed["fields"])
        self.enabled = writer.name == MINITICKER_SCHEMA and fields == FIELDS
        event_type = EVENT_TYPE.encode()
        self._head = codec.header + encode_long(len(event_type)) + event_type
        # symbol -> its stream_type and symbol, Avro-encoded (the two fields after event_time)
        self._symbols: dict[str, bytes] = {}
        self._event_times = ClockLongs().encode
        self._received_times = ClockLongs().encode
        # The last event time, its Avro long and its iso_timestamp field (length and text).
        self._time = -1
        self._time_long = b""
        self._iso = ""

    def encode_message(self, message: object, received_at_us: int, out: list[Encoded]) -> bool:
        """Append the (symbol, bytes) of each record of ``message`` to ``out`` and return True;
        or return False with ``out`` unchanged when the message needs ``validate_message``."""
        if not self.enabled or type(message) is not dict:
            return False
        stream, data = message.get("stream"), message.get("data")
        if type(stream) is not str:
            return False
        received = self._received_times(received_at_us)
        if type(data) is dict:
            known = miniticker_stream(stream)
            if known is None:
                return False
            encoded = self._payload(data, received, known[0])
            if encoded is None:
                return False
            out.append(encoded)
            return True
        if stream != ARRAY_STREAM or type(data) is not list:
            return False
        start = len(out)
        payload = self._payload
        for element in data:
            encoded = payload(element, received, None) if type(element) is dict else None
            if encoded is None:
                del out[start:]  # the whole frame goes to validate_message, rejects and all
                return False
            out.append(encoded)
        return True

    def _payload(
        self, data: dict[str, Any], received: bytes, expected_symbol: str | None
    ) -> Encoded | None:
        """One payload's (symbol, bytes), or None where validate_message would reject it."""
        try:
            event_type, event_time, symbol = data["e"], data["E"], data["s"]
            c, o, h, low, v, q = data["c"], data["o"], data["h"], data["l"], data["v"], data["q"]
        except KeyError:
            return None
        if not (
            event_type == EVENT_TYPE
            and type(event_time) is int
            and MIN_EVENT_TIME_MS <= event_time < MAX_EVENT_TIME_MS
            and type(symbol) is str
            and (expected_symbol is None or symbol == expected_symbol)
            and type(c) is str
            and type(o) is str
            and type(h) is str
            and type(low) is str
            and type(v) is str
            and type(q) is str
            # Decimals are ASCII and at most 39 characters: each length is one character.
            and _six_decimals_match(f"{c}|{o}|{h}|{low}|{v}|{q}")
        ):
            return None
        symbol_fields = self._symbols.get(symbol)
        if symbol_fields is None:
            symbol_fields = self._symbol_fields(symbol)
            if symbol_fields is None:
                return None
        if event_time != self._time:  # records of a tick share it
            self._time = event_time
            self._time_long = self._event_times(event_time)
            seconds, millis = divmod(event_time, 1000)
            self._iso = f"{_ISO_LENGTH}{second_prefix(seconds)}.{_MILLIS[millis]}Z"
        lengths = SHORT_STRING_LENGTHS
        text = (
            f"{lengths[len(c)]}{c}{lengths[len(o)]}{o}{lengths[len(h)]}{h}"
            f"{lengths[len(low)]}{low}{lengths[len(v)]}{v}{lengths[len(q)]}{q}{self._iso}"
        )
        body = (self._head, self._time_long, symbol_fields, text.encode(), received)
        return symbol, b"".join(body)

    def _symbol_fields(self, symbol: str) -> bytes | None:
        """stream_type and symbol of a symbol the symbol rule accepts, Avro-encoded; else None."""
        if _symbol_match(symbol) is None:
            return None
        stream_type = symbol.lower() + STREAM_SUFFIX
        lengths = SHORT_STRING_LENGTHS
        fields = f"{lengths[len(stream_type)]}{stream_type}{lengths[len(symbol)]}{symbol}"
        if len(self._symbols) >= CACHE_LIMIT:
            self._symbols.clear()
        encoded = self._symbols[symbol] = fields.encode()
        return encoded
