"""Routing by schema (pure), and the kline field tuples against schemas/kline.avsc."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from consumers.klines import (
    KLINE_BOOLEAN_FIELDS,
    KLINE_DECIMAL_FIELDS,
    KLINE_FIELD_ORDER,
    KLINE_INTEGER_FIELDS,
    KLINE_STRING_FIELDS,
)
from consumers.routing import (
    Route,
    UnhandledRecordError,
    dead_letter_unhandled,
    route_of,
    split,
    unhandled_letters,
)
from schemas.codec import KLINE_SCHEMA, MINITICKER_SCHEMA, SCHEMA_DIR
from tests.support.klines import HEARTBEAT_SCHEMA, encode, heartbeat, kline
from tests.support.pipeline import make_record

SHARD = "shardId-000000000001"
ARRIVAL = datetime(2026, 11, 18, 19, 33, 20, tzinfo=UTC)


def consumed(records: list[dict[str, Any]]) -> list[ConsumedRecord]:
    out = []
    for i, fields in enumerate(records):
        schema = (
            KLINE_SCHEMA
            if "interval" in fields
            else MINITICKER_SCHEMA
            if "event_type" in fields
            else HEARTBEAT_SCHEMA
        )
        key, data = encode(fields)
        out.append(
            ConsumedRecord(SHARD, Position(100 + i, i % 3), ARRIVAL, key, fields, schema, data)
        )
    return out


def test_each_type_has_its_route() -> None:
    records = consumed(
        [make_record(0), kline("BTCUSDT", 1), kline("BTCUSDT", 1, closed=False), heartbeat("X", 1)]
    )
    assert [route_of(r) for r in records] == [
        Route.TICKER,
        Route.CANDLE,
        Route.OPEN_KLINE,
        Route.UNHANDLED,
    ]


def test_a_ticker_only_batch_passes_through_as_it_is() -> None:
    records = consumed([make_record(i) for i in range(5)])
    routed = split(records)
    assert routed.tickers is records
    assert (list(routed.candles), routed.open_klines, list(routed.unhandled)) == ([], 0, [])


def test_a_mixed_batch_splits_in_shard_order() -> None:
    fields = [
        make_record(0),
        kline("ETHUSDT", 2, closed=False),
        kline("BTCUSDT", 2),
        heartbeat("BTCUSDT", 3),
        make_record(1),
        kline("ETHUSDT", 2),
        kline("ETHUSDT", 3, closed=False, tick=1),
    ]
    records = consumed(fields)
    routed = split(records)
    assert list(routed.tickers) == [records[0], records[4]]
    assert list(routed.candles) == [records[2], records[5]]
    assert routed.open_klines == 2
    assert list(routed.unhandled) == [records[3]]


def test_unhandled_records_become_dead_letters_with_their_bytes_and_reason() -> None:
    records = consumed([make_record(0), heartbeat("BTCUSDT", 3)])
    (letter,) = unhandled_letters(records[1:], "consumer-s3")
    assert letter == UndecodableRecord(
        SHARD,
        Position(101, 1),
        ARRIVAL,
        records[1].data,
        "no handler for schema crypto_live.v1.Heartbeat in consumer-s3",
    )

    written: list[list[UndecodableRecord]] = []
    asyncio.run(dead_letter_unhandled(records[1:], "consumer-s3", written.append))
    assert written == [[letter]]
    asyncio.run(dead_letter_unhandled([], "consumer-s3", written.append))
    assert len(written) == 1  # nothing to keep: no write


def test_without_a_dead_letter_store_an_unhandled_record_is_an_error_not_a_drop() -> None:
    records = consumed([heartbeat("BTCUSDT", 3)])
    with pytest.raises(
        UnhandledRecordError, match=r"no handler for schema crypto_live\.v1\.Heartbeat"
    ):
        asyncio.run(dead_letter_unhandled(records, "consumer-dynamodb", None))


def test_kline_field_tuples_are_the_schemas_fields_with_their_types() -> None:
    schema = json.loads((SCHEMA_DIR / "kline.avsc").read_text())
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert tuple(types) == KLINE_FIELD_ORDER
    groups = (KLINE_STRING_FIELDS, KLINE_INTEGER_FIELDS, KLINE_DECIMAL_FIELDS, KLINE_BOOLEAN_FIELDS)
    assert sorted(name for group in groups for name in group) == sorted(types)
    assert {types[n] for n in KLINE_STRING_FIELDS + KLINE_DECIMAL_FIELDS} == {"string"}
    assert {types[n] for n in KLINE_INTEGER_FIELDS} == {"long"}
    assert {types[n] for n in KLINE_BOOLEAN_FIELDS} == {"boolean"}
    # The decimal fields are the prices and volumes (the docs say "exact decimal string").
    docs = {f["name"]: f.get("doc", "") for f in schema["fields"]}
    assert {n for n in types if "exact decimal string" in docs[n]} == set(KLINE_DECIMAL_FIELDS)
