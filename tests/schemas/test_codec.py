"""Avro single-object codec and schema registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.codec import (
    KLINE_SCHEMA,
    MAGIC,
    MINITICKER_SCHEMA,
    SCHEMA_DIR,
    DecodeError,
    EncodeError,
    SchemaRegistry,
    SingleObjectCodec,
    default_codec,
    register,
    schema_fingerprint,
)

RECORD: dict[str, Any] = {
    "event_type": "24hrMiniTicker",
    "event_time": 1_795_000_000_123,
    "stream_type": "btcusdt@miniTicker",
    "symbol": "BTCUSDT",
    "close_price": "65000.12000000",
    "open_price": "64000.00000000",
    "high_price": "66000.00000000",
    "low_price": "63000.00000000",
    "base_volume": "12345.67800000",
    "quote_volume": "800000000.12345678",
    "iso_timestamp": "2026-11-19T09:46:40.123Z",
    "received_at": 1_795_000_000_200_000,
}


def test_round_trip_keeps_exact_decimal_strings() -> None:
    codec = default_codec()
    data = codec.encode(RECORD)
    assert codec.decode(data) == RECORD


def test_header_is_marker_and_little_endian_fingerprint() -> None:
    codec = default_codec()
    data = codec.encode(RECORD)
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == codec.writer.fingerprint


def test_fingerprint_matches_avro_spec_vectors() -> None:
    # Avro spec: CRC-64-AVRO of "null" is 7195948357588979594, of "int" 8247732601305521295.
    assert schema_fingerprint("null") == (7195948357588979594).to_bytes(8, "little")
    assert schema_fingerprint("int") == (8247732601305521295).to_bytes(8, "little")


def test_registry_reads_the_shipped_schema() -> None:
    registry = SchemaRegistry.from_directory(SCHEMA_DIR)
    assert len(registry) >= 1
    assert registry.by_name("crypto_live.v1.MiniTicker").name == "crypto_live.v1.MiniTicker"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad marker"),
        (b"\xc3\x01\x00", "bad marker"),
        (b"\x00\x01" + bytes(8) + b"x", "bad marker"),
        (b"\xc3\x01" + bytes(8) + b"x", "unknown schema fingerprint"),
    ],
)
def test_bad_headers_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        default_codec().decode(data)


def test_truncated_and_trailing_bytes_raise_decode_error() -> None:
    codec = default_codec()
    data = codec.encode(RECORD)
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(data[:-5])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(data + b"\x00")


def test_every_truncation_raises_only_decode_error() -> None:
    codec = default_codec()
    data = codec.encode(RECORD)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])


def test_record_not_matching_schema_raises_encode_error() -> None:
    bad = dict(RECORD, event_time="not a number")
    with pytest.raises(EncodeError, match="does not match"):
        default_codec().encode(bad)


def _write_v2(directory: Path) -> None:
    schema = json.loads((SCHEMA_DIR / "miniticker.avsc").read_text())
    schema["fields"].append(
        {"name": "exchange", "type": "string", "default": "binance", "doc": "v2 field"}
    )
    (directory / "miniticker.avsc").write_text((SCHEMA_DIR / "miniticker.avsc").read_text())
    (directory / "miniticker_v2.avsc").write_text(json.dumps(schema))


def test_schema_evolution_both_directions(tmp_path: Path) -> None:
    _write_v2(tmp_path)
    registry = SchemaRegistry.from_directory(tmp_path)
    assert len(registry) == 2
    v1 = register(json.loads((SCHEMA_DIR / "miniticker.avsc").read_text()))
    v2 = registry.by_name("crypto_live.v1.MiniTicker")  # newest file wins the name
    assert v1.fingerprint != v2.fingerprint

    v2_codec = SingleObjectCodec(registry)
    v2_bytes = v2_codec.encode(dict(RECORD, exchange="binance-us"))
    # A v1 reader reads v2 data: the added field is dropped.
    assert v2_codec.decode(v2_bytes, reader=v1) == RECORD

    v1_codec = SingleObjectCodec(SchemaRegistry([registry.by_fingerprint(v1.fingerprint)]))
    v1_bytes = v1_codec.encode(RECORD)
    # A v2 reader reads v1 data: the added field takes its default.
    assert v2_codec.decode(v1_bytes, reader=v2) == dict(RECORD, exchange="binance")


def test_unknown_writer_is_a_decode_error_not_a_crash(tmp_path: Path) -> None:
    _write_v2(tmp_path)
    v2_codec = SingleObjectCodec(SchemaRegistry.from_directory(tmp_path))
    data = v2_codec.encode(dict(RECORD, exchange="x"))
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        default_codec().decode(data)


def kline_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_type": "kline",
        "event_time": 1_795_000_060_000,
        "stream_type": "btcusdt@kline_1m",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": 1_795_000_000_000,
        "close_time": 1_795_000_059_999,
        "first_trade_id": 100,
        "last_trade_id": 141,
        "open_price": "91000.01000000",
        "close_price": "91002.50000000",
        "high_price": "91010.00000000",
        "low_price": "90990.10000000",
        "base_volume": "1.23456000",
        "quote_volume": "112345.67890000",
        "trades": 42,
        "closed": True,
        "taker_buy_base_volume": "0.60000000",
        "taker_buy_quote_volume": "54600.00000000",
        "source": "websocket",
        "iso_timestamp": "2026-11-18T11:07:40.000Z",
        "received_at": 1_795_000_060_001_000,
    }
    record.update(overrides)
    return record


def test_kline_and_miniticker_share_a_stream_and_decode_by_their_fingerprint() -> None:
    tickers = default_codec()
    klines = tickers.for_writer(KLINE_SCHEMA)
    kline = kline_record()
    data = klines.encode(kline)
    assert data[:2] == b"\xc3\x01"
    # The compiled writer and fastavro agree byte for byte on the kline schema too.
    assert data == klines.encode_with_fastavro(kline)
    assert tickers.decode_typed(data) == (KLINE_SCHEMA, kline)
    ticker = dict(RECORD)
    assert tickers.decode_typed(tickers.encode(ticker)) == (MINITICKER_SCHEMA, ticker)
    # A kline never resolves to the miniTicker reader: that is a clear decode error.
    with pytest.raises(DecodeError):
        tickers.decode(data)
