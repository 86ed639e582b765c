"""Kline records for the tests: makers, a third schema no sink handles, a mixed
publish through the real producer path (Avro single-object, KPL aggregation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Final

from consumers.app import (
    ConsumerKind,
    app_name,
    dead_letter_writer,
    lease_table_name,
    processor_factory,
    worker_config,
)
from consumers.engine.leases import DynamoLeaseStore
from consumers.engine.worker import Worker
from core.aws import AwsClients
from core.dead_letters import DeadLetter, parse_dead_letter_line
from core.errors import CryptoLiveError
from core.metrics import Metrics
from core.settings import Settings
from producer.kinesis import KinesisStreamWriter
from producer.publisher import Publisher
from schemas.codec import (
    KLINE_SCHEMA,
    MINITICKER_SCHEMA,
    SchemaRegistry,
    SingleObjectCodec,
    default_codec,
    register,
)
from schemas.kline import FIELD_ORDER as KLINE_FIELDS
from schemas.record import iso_timestamp

MINUTE_MS: Final = 60_000
# A whole minute (and a whole hour) some time in 2026.
BASE_MINUTE_MS: Final = 1_795_000_000_000 // 3_600_000 * 3_600_000

# A type of record no sink has a handler for (a future schema), registered only where a test
# needs the consumers to decode it.
HEARTBEAT_SCHEMA: Final = "crypto_live.v1.Heartbeat"
HEARTBEAT: Final = register(
    {
        "type": "record",
        "name": "Heartbeat",
        "namespace": "crypto_live.v1",
        "fields": [
            {"name": "symbol", "type": "string"},
            {"name": "event_time", "type": "long"},
        ],
    }
)


def registry_with_heartbeat() -> SchemaRegistry:
    """The shipped schemas plus Heartbeat."""
    shipped = SchemaRegistry.from_directory()
    schemas = [shipped.by_name(MINITICKER_SCHEMA), shipped.by_name(KLINE_SCHEMA), HEARTBEAT]
    return SchemaRegistry(schemas)


def codec_for(schema: str, registry: SchemaRegistry | None = None) -> SingleObjectCodec:
    """A codec writing ``schema`` over ``registry`` (default: the shipped one plus Heartbeat)."""
    return SingleObjectCodec(registry or registry_with_heartbeat(), schema)


KLINE_CODEC: Final = default_codec().for_writer(KLINE_SCHEMA)
TICKER_CODEC: Final = default_codec()
HEARTBEAT_CODEC: Final = codec_for(HEARTBEAT_SCHEMA)


def kline_record(symbol: str, open_time: int, event_time: int, **values: Any) -> dict[str, Any]:
    """A kline.avsc record of ``symbol``'s 1-minute kline opening at ``open_time``, its fields
    in the schema's order: those the symbol and the two times fix, ``values`` all the others."""
    fields = {
        "event_type": "kline",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@kline_1m",
        "symbol": symbol,
        "interval": "1m",
        "open_time": open_time,
        "close_time": open_time + MINUTE_MS - 1,
        "iso_timestamp": iso_timestamp(event_time),
        **values,
    }
    assert fields.keys() == set(KLINE_FIELDS), sorted(fields.keys() ^ set(KLINE_FIELDS))
    return {name: fields[name] for name in KLINE_FIELDS}


def kline(symbol: str, minute: int, *, closed: bool = True, tick: int = 0) -> dict[str, Any]:
    """A kline of ``symbol`` for minute ``minute`` after BASE_MINUTE_MS; an open one (tick
    0, 1, ... updates within the minute) or the closed one. Values differ per symbol, minute
    and tick; decimals carry trailing zeros (they must stay exact strings)."""
    open_time = BASE_MINUTE_MS + minute * MINUTE_MS
    close_time = open_time + MINUTE_MS - 1
    event_time = close_time + 1 if closed else open_time + 1_000 * (tick + 1)
    seed = sum(map(ord, symbol)) % 97
    return kline_record(
        symbol,
        open_time,
        event_time,
        first_trade_id=1_000 * minute,
        last_trade_id=1_000 * minute + 10 + tick,
        open_price=f"{65000 + minute}.{seed:02d}000000",
        close_price=f"{65000 + minute}.{seed:02d}5{tick % 10}0000",
        high_price=f"{65100 + minute}.10000000",
        low_price=f"{64900 + minute}.00000001",
        base_volume=f"{minute + tick}.12345678",
        quote_volume=f"{(minute + tick) * 65000}.87654321",
        trades=11 + tick + minute,
        closed=closed,
        taker_buy_base_volume=f"{minute}.02000000",
        taker_buy_quote_volume=f"{minute * 65000}.00000000",
        source="websocket",
        received_at=event_time * 1000 + 7,
    )


def minute_of_klines(
    symbols: Sequence[str], minute: int, open_ticks: int = 2
) -> list[dict[str, Any]]:
    """What the websocket sends for one minute: ``open_ticks`` open updates per symbol, then
    the closed kline of each."""
    out = [kline(s, minute, closed=False, tick=t) for t in range(open_ticks) for s in symbols]
    return out + [kline(s, minute) for s in symbols]


def heartbeat(symbol: str, event_time: int) -> dict[str, Any]:
    return {"symbol": symbol, "event_time": event_time}


def encode(record: dict[str, Any]) -> tuple[str, bytes]:
    """(partition key, single-object bytes) of a miniTicker, a Kline or a Heartbeat."""
    if "interval" in record:
        return record["symbol"], KLINE_CODEC.encode(record)
    if "event_type" in record:
        return record["symbol"], TICKER_CODEC.encode(record)
    return record["symbol"], HEARTBEAT_CODEC.encode(record)


def unknown_fingerprint(data: bytes) -> bytes:
    """``data`` with a fingerprint no registry knows (the body left as it is)."""
    return data[:2] + bytes(8) + data[10:]


def publish_encoded(
    settings: Settings, clients: AwsClients, entries: Iterable[tuple[str, bytes]]
) -> None:
    """Put (partition key, bytes) entries through the producer's Publisher, in order."""

    async def run() -> None:
        writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
        publisher = Publisher(writer, Metrics("publish-test"))
        await publisher.start()
        for key, data in entries:
            await publisher.add(key, data)
        undelivered = await publisher.close(30)
        if undelivered:
            raise CryptoLiveError(f"{len(undelivered)} test records not delivered")

    asyncio.run(run())


def exact(value: str) -> Decimal:
    """A decimal string as DynamoDB compares Numbers (trailing zeros do not count)."""
    return Decimal(value)


def backfilled(record: dict[str, Any]) -> dict[str, Any]:
    """The same candle as fetched over REST by backfill: no trade ids, another source."""
    return dict(record, first_trade_id=-1, last_trade_id=-1, source="backfill", received_at=1)


def mixed_stream(
    symbols: Sequence[str], minutes: int, *, resend: bool = True
) -> list[dict[str, Any]]:
    """One stream's worth of every type, in publish order: per minute, miniTickers of each
    symbol interleaved with open klines, the closed klines, a Heartbeat; then (``resend``) an
    exact resend of one closed kline, and a backfilled copy of another."""
    from tests.support.pipeline import ticker

    out: list[dict[str, Any]] = []
    for minute in range(minutes):
        open_time = BASE_MINUTE_MS + minute * MINUTE_MS
        for tick in range(3):
            for i, symbol in enumerate(symbols):
                at = open_time + tick * 20_000 + i
                out.append(ticker(symbol, at, f"{65000 + minute}.{tick}{i}000000"))
                if tick < 2:
                    out.append(kline(symbol, minute, closed=False, tick=tick))
        out += [kline(symbol, minute) for symbol in symbols]
        out.append(heartbeat(symbols[0], open_time + 59_000))
    if resend:
        out.append(kline(symbols[0], 0))
    out.append(backfilled(kline(symbols[-1], 1)))
    return out


def closed_candles(records: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The last closed kline per (symbol, open_time), in publish order: what a sink keeps."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        if record.get("interval") and record["closed"]:
            out[(record["symbol"], record["open_time"])] = record
    return out


def consume_typed(
    settings: Settings,
    clients: AwsClients,
    kind: ConsumerKind,
    done: Callable[[Metrics], bool],
    timeout: float = 60,
) -> Metrics:
    """One in-process worker of the ``kind`` group, as ``consume <kind>`` wires it but with a
    codec that also knows Heartbeat (which no sink handles), until ``done(metrics)``."""

    async def run() -> Metrics:
        metrics = Metrics(f"consumer-{kind}")
        sink = processor_factory(settings, clients, kind, metrics)
        worker = Worker(
            kinesis=clients.kinesis,
            stream=settings.kinesis_stream_name,
            leases=DynamoLeaseStore(clients.dynamodb, lease_table_name(settings, kind)),
            processors=sink.processors,
            codec=SingleObjectCodec(registry_with_heartbeat()),
            dead_letters=dead_letter_writer(clients, settings, app_name(settings, kind), metrics),
            config=worker_config(settings),
            metrics=metrics,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            async with asyncio.timeout(timeout):
                while not done(metrics):
                    await asyncio.sleep(0.2)
                    if task.done():
                        task.result()
        finally:
            stop.set()
            await task
            sink.close()
        return metrics

    return asyncio.run(run())


def dead_letters(clients: AwsClients, bucket: str, source: str) -> list[DeadLetter]:
    """Every dead letter under errors/{source}/."""
    out = []
    pages = clients.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"errors/{source}/"
    )
    for page in pages:
        for obj in page.get("Contents", []):
            body = clients.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out += [parse_dead_letter_line(line) for line in body.splitlines()]
    return out
