"""RecordEncoder: each record by the writer schema of its type, told apart by its fingerprint."""

from __future__ import annotations

import pytest

from producer.encoding import RecordEncoder
from producer.validation import validate_message
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA, EncodeError, default_codec
from tests.producer.klines import RECEIVED_AT, kline_message, kline_payload
from tests.support.pipeline import make_record

CODEC = default_codec()


def test_tickers_and_klines_are_encoded_by_the_schema_of_their_type() -> None:
    encoder = RecordEncoder(CODEC)
    ticker = make_record(7)
    (kline,), _ = validate_message(kline_message(kline_payload()), RECEIVED_AT)
    assert CODEC.decode_typed(encoder.encode(ticker)) == (MINITICKER_SCHEMA, ticker)
    assert CODEC.decode_typed(encoder.encode(kline)) == (KLINE_SCHEMA, kline)
    # The hot path's table gives the same bytes.
    assert encoder.by_event_type["kline"](kline) == encoder.encode(kline)
    assert encoder.by_event_type["24hrMiniTicker"](ticker) == CODEC.encode(ticker)


def test_a_kline_is_never_written_as_a_miniticker() -> None:
    # It has every MiniTicker field, so the miniTicker codec alone would take it.
    (kline,), _ = validate_message(kline_message(kline_payload()), RECEIVED_AT)
    data = RecordEncoder(CODEC).encode(kline)
    assert data != CODEC.encode(kline)
    assert data[2:10] == CODEC.for_writer(KLINE_SCHEMA).writer.fingerprint


@pytest.mark.parametrize("event_type", ["trade", None, 5])
def test_a_type_without_a_writer_schema_is_an_encode_error(event_type: object) -> None:
    record = dict(make_record(1), event_type=event_type)
    with pytest.raises(EncodeError, match="no writer schema for event type"):
        RecordEncoder(CODEC).encode(record)
