"""The DynamoDB consumer on one stream of every type (moto over HTTP): closed klines become
exactly the candles, miniTicker tables as before, open klines nowhere, other types dead letters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from consumers.dynamodb.candles import candle_item
from consumers.dynamodb.items import coalesce_latest, history_item
from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.klines import (
    closed_candles,
    consume_typed,
    dead_letters,
    encode,
    kline,
    mixed_stream,
    publish_encoded,
    unknown_fingerprint,
)
from tests.support.pipeline import scan_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
FAST = {
    "kinesis_shard_count": 2,
    "failover_seconds": 3,
    "shard_discovery_seconds": 0.5,
    "idle_time_between_reads_ms": 100,
}


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as Python values; Numbers as exact Decimals (DynamoDB drops trailing zeros)."""
    return {k: Decimal(v["N"]) if "N" in v else v.get("S", v.get("BOOL")) for k, v in item.items()}


def test_a_stream_of_every_type_routes_each_where_it_belongs(
    aws_settings: Settings, aws: AwsClients
) -> None:
    settings = aws_settings.with_overrides(**FAST, consumer_app_name="candles-test")
    provision(settings, aws)
    records = mixed_stream(SYMBOLS, minutes=6)
    entries = [encode(r) for r in records]
    garbled = [unknown_fingerprint(data) for _, data in entries[:2]]
    publish_encoded(settings, aws, [*entries, *(("BTCUSDT", g) for g in garbled)])
    heartbeats = [r for r in records if "event_type" not in r]

    metrics = consume_typed(
        settings,
        aws,
        "dynamodb",
        lambda m: (
            m.value(Counters.RECORDS_CONSUMED) >= len(records)
            and m.value(Counters.DEAD_LETTERS) >= len(heartbeats) + len(garbled)
        ),
    )

    candles = {
        (i["symbol"]["S"], int(i["open_time"]["N"])): plain(i)
        for i in scan_all(aws, settings.dynamo_candles_table_name)
    }
    expected = closed_candles(records)
    assert len(expected) == len(SYMBOLS) * 6
    assert candles == {key: plain(candle_item(r)) for key, r in expected.items()}
    # The later copy of the minute wins, in shard order.
    assert candles[("XRPUSDT", kline("XRPUSDT", 1)["open_time"])]["source"] == "backfill"
    tickers = [r for r in records if r.get("event_type") == "24hrMiniTicker"]
    history = {
        (i["stream_type"]["S"], i["iso_timestamp"]["S"]): plain(i)
        for i in scan_all(aws, settings.dynamo_table_name)
    }
    assert history == {
        (r["stream_type"], r["iso_timestamp"]): plain(history_item(r, settings.retention_ttl_days))
        for r in tickers
    }
    latest = {i["symbol"]["S"]: plain(i) for i in scan_all(aws, settings.dynamo_latest_table_name)}
    assert latest == {u.symbol: plain(u.attributes) for u in coalesce_latest(tickers)}
    open_klines = sum(1 for r in records if r.get("closed") is False)
    assert metrics.value(Counters.OPEN_KLINES_SKIPPED) == open_klines

    letters = dead_letters(aws, settings.s3_bucket, "candles-test")
    unhandled = [d for d in letters if d.reason.startswith("no handler")]
    assert sorted(d.raw for d in unhandled) == sorted(
        data for record, (_, data) in zip(records, entries, strict=True) if record in heartbeats
    )
    assert {d.reason for d in unhandled} == {
        "no handler for schema crypto_live.v1.Heartbeat in consumer-dynamodb"
    }
    unknown = [d for d in letters if d not in unhandled]
    assert sorted(d.raw for d in unknown) == sorted(garbled)
    assert all(d.reason.startswith("unknown schema fingerprint") for d in unknown)

    # A second group from TRIM_HORIZON (a replay) writes the very same candles again.
    again = settings.with_overrides(consumer_app_name="candles-replay")
    consume_typed(
        again, aws, "dynamodb", lambda m: m.value(Counters.RECORDS_CONSUMED) >= len(records)
    )
    replayed = {
        (i["symbol"]["S"], int(i["open_time"]["N"])): plain(i)
        for i in scan_all(aws, settings.dynamo_candles_table_name)
    }
    assert replayed == candles
