"""Each record encoded with the writer schema of its type, which its ``event_type`` names:
miniTicker events as crypto_live.v1.MiniTicker, klines as crypto_live.v1.Kline.

Both go into one Kinesis stream; consumers tell them apart by the schema fingerprint in each
record's header (``SingleObjectCodec.decode_typed``). A kline holds every MiniTicker field, so
encoding it with the miniTicker codec would succeed and silently drop the kline's own fields:
the type, not the shape, picks the codec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from producer.validation import EVENT_TYPE as MINITICKER_EVENT_TYPE
from schemas.codec import KLINE_SCHEMA, EncodeError, SingleObjectCodec
from schemas.kline import EVENT_TYPE as KLINE_EVENT_TYPE

Encode = Callable[[Mapping[str, Any]], bytes]


class RecordEncoder:
    """Encodes a record with the codec of its event type."""

    def __init__(self, codec: SingleObjectCodec) -> None:
        """``codec`` writes miniTicker records (its writer schema, MiniTicker by default)."""
        # event_type -> encode: the producer's hot path indexes it directly (its records come
        # from validate_message, which makes only these types).
        self.by_event_type: dict[str, Encode] = {
            MINITICKER_EVENT_TYPE: codec.encode,
            KLINE_EVENT_TYPE: codec.for_writer(KLINE_SCHEMA).encode,
        }

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Single-object bytes of ``record``; EncodeError for a type without a writer schema."""
        event_type = record.get("event_type")
        encode = self.by_event_type.get(event_type) if isinstance(event_type, str) else None
        if encode is None:
            raise EncodeError(f"no writer schema for event type {event_type!r}")
        return encode(record)
