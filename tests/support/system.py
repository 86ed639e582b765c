"""Building blocks of the whole-system tests: a scripted exchange on its own thread, valid
payloads, services behind fault proxies, and readers of what ended up in each sink."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from consumers.app import run_consumer
from consumers.dynamodb.items import history_item
from consumers.operations.stream_dump import read_stream
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from tests.support.exchange import ScriptedExchange
from tests.support.fault_proxy import Decision, FaultProxy
from tests.support.pipeline import (
    BASE_MS,
    ServiceProcess,
    launch_consumer,
    launch_producer,
    scan_all,
    wait_until,
)

SEED = 20_261_123
SYMBOLS = [f"SYM{i}USDT" for i in range(16)]
# Short S3 windows so batches close within a test (and the default 2 s grace after each).
S3_WINDOW = {"MAX_BATCH_TIMEOUT": "2"}
HISTORY_KEY = ("stream_type", "iso_timestamp")

_T = TypeVar("_T")
Launch = Callable[[Path], ServiceProcess]  # starts a service, logging to the given file


# -- building blocks -------------------------------------------------------------------------


class ExchangeThread:
    """A ScriptedExchange on its own event loop, for producers run as processes."""

    def __init__(self, **options: Any) -> None:
        self._options = {"autotick": False, "seed": SEED, **options}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.exchange: ScriptedExchange

    def __enter__(self) -> ExchangeThread:
        self._thread.start()

        async def start() -> ScriptedExchange:
            exchange = ScriptedExchange(**self._options)
            await exchange.start()
            return exchange

        self.exchange = self.call(start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.exchange.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def spawn(self, coroutine: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 180) -> _T:
        return self.spawn(coroutine).result(timeout)

    def send(self, messages: list[str]) -> None:
        """Send each text frame to every connected client; returns once all were written."""
        self.call(self.exchange.send_script(messages))

    def wait_for_connections(self, total: int, timeout: float = 30) -> None:
        """Until ``total`` connections were made so far and one is open."""
        exchange = self.exchange
        wait_until(
            lambda: exchange.connections_total >= total and exchange.client_count >= 1,
            timeout,
            0.05,
        )


def payload(index: int, symbol: str | None = None) -> dict[str, Any]:
    """A valid miniTicker payload, unique per (symbol, index); symbols take turns by default."""
    symbol = symbol or SYMBOLS[index % len(SYMBOLS)]
    return {
        "e": "24hrMiniTicker",
        "E": BASE_MS + index,
        "s": symbol,
        "c": f"{1000 + index % 5000}.{index % 97:02d}000000",
        "o": "1000.00000000",
        "h": f"{7000 + index % 10}.00000000",
        "l": "999.00000000",
        "v": f"{index}.12345678",
        "q": f"{index * 3}.87654321",
    }


def envelope(data: Any, stream: str | None = None) -> str:
    """A combined-stream frame as Binance sends it."""
    stream = stream or f"{data['s'].lower()}@miniTicker"
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def comparable(record: dict[str, Any]) -> str:
    """A record without the producer's clock-dependent fields."""
    return json.dumps(
        {k: v for k, v in record.items() if k not in ("received_at", "iso_timestamp")},
        sort_keys=True,
    )


def exact(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def as_record(data: dict[str, Any]) -> str:
    """``comparable`` of what the producer makes of a valid payload."""
    keys = ("close_price", "open_price", "high_price", "low_price", "base_volume", "quote_volume")
    record = {"event_type": data["e"], "event_time": data["E"], "symbol": data["s"]}
    record["stream_type"] = f"{data['s'].lower()}@miniTicker"
    record.update(zip(keys, (data[k] for k in "cohlvq"), strict=True))
    return comparable(record)


def stream_records(aws: AwsClients, settings: Settings) -> list[dict[str, Any]]:
    """Every user record in the stream, in shard order."""
    shards = read_stream(aws.kinesis, settings.kinesis_stream_name)
    return [row.record for rows in shards.values() for row in rows]


def s3_objects(aws: AwsClients, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/``, keyed without the prefix."""
    out: dict[str, bytes] = {}
    pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = aws.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"].removeprefix(prefix + "/")] = body
    return out


def s3_rows(aws: AwsClients, settings: Settings, prefix: str | None = None) -> list[Any]:
    blobs = s3_objects(aws, settings.s3_bucket, prefix or settings.s3_jsonl_dir_path)
    return [json.loads(line) for b in blobs.values() for line in gzip.decompress(b).splitlines()]


def dead_letters(aws: AwsClients, settings: Settings, source: str) -> list[dict[str, Any]]:
    blobs = s3_objects(aws, settings.s3_bucket, f"errors/{source}")
    return [json.loads(line) for blob in blobs.values() for line in blob.splitlines()]


def keyed(items: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """DynamoDB items by their key; fails on a duplicate row."""
    out: dict[tuple[str, ...], Any] = {}
    for item in items:
        k = tuple(next(iter(item[name].values())) for name in key)
        assert k not in out, f"duplicate row {k}"
        out[k] = item
    return out


def history_table(aws: AwsClients, table: str) -> dict[tuple[str, ...], Any]:
    """A history table's items by their key; fails on a duplicate row."""
    return keyed(scan_all(aws, table), HISTORY_KEY)


def history_of(settings: Settings, records: list[dict[str, Any]]) -> dict[tuple[str, ...], Any]:
    """What ``history_table`` must hold for ``records``: one item each, as the sink writes it."""
    ttl = settings.retention_ttl_days
    return {(r["stream_type"], r["iso_timestamp"]): history_item(r, ttl) for r in records}


def scrape(service: ServiceProcess) -> dict[str, float]:
    """The service's /metrics (on the port it logged), summed over labels, by name."""
    with urllib.request.urlopen(service.base_url() + "/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = defaultdict(float)
    for sample in text.splitlines():
        if sample and not sample.startswith("#"):
            name, value = sample.rsplit(" ", 1)
            totals[name.split("{", 1)[0]] += float(value)
    return totals


def running(*services: ServiceProcess) -> bool:
    """True, or fail at once when a service died (rather than waiting out a timeout)."""
    for service in services:
        code = service.proc.poll()
        assert code is None, f"{service.log_path.name} exited {code}: {service.messages()[-3:]}"
    return True


def until(services: list[ServiceProcess], condition: Callable[[], bool], timeout: float) -> None:
    wait_until(lambda: running(*services) and condition(), timeout, 0.5)


def stop_all(*services: ServiceProcess | None) -> None:
    for service in services:
        if service is not None:
            service.stop()


@contextmanager
def behind_proxies(
    settings: Settings, exchange_url: str, decide: Callable[[str], Decision]
) -> Iterator[dict[str, Launch]]:
    """How to start the producer and both consumers, each with a FaultProxy of its own in front
    of AWS, that asks ``decide(name)`` about its requests; by name, producer first."""
    endpoint = settings.aws_endpoint_url or ""
    with (
        FaultProxy(endpoint, decide("producer")) as to_producer,
        FaultProxy(endpoint, decide("dynamodb")) as to_dynamodb,
        FaultProxy(endpoint, decide("s3")) as to_s3,
    ):
        yield {
            "producer": lambda log: launch_producer(settings, exchange_url, log, to_producer.url),
            "dynamodb": lambda log: launch_consumer(
                settings, "dynamodb", log, AWS_ENDPOINT_URL=to_dynamodb.url
            ),
            "s3": lambda log: launch_consumer(
                settings, "s3", log, AWS_ENDPOINT_URL=to_s3.url, **S3_WINDOW
            ),
        }


def operation(method: str, path: str, headers: dict[str, str]) -> str:
    """``Kinesis.PutRecords``, ``DynamoDB.BatchWriteItem``, ``S3.PUT`` (batch objects) ..."""
    target = header(headers, "x-amz-target")
    if target:
        service, _, op = target.partition(".")
        return f"{service.split('_')[0]}.{op}"
    return "S3.PUT" if method == "PUT" and "/batch_jsonl/" in path else f"S3.{method}"


def header(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def consume_fault_free(settings: Settings, events: int) -> None:
    """Both consumer groups in-process, without faults, over the same stream contents."""

    async def run() -> None:
        stop = asyncio.Event()
        dynamodb, s3 = Metrics("clean-dynamodb"), Metrics("clean-s3")
        tasks = [
            asyncio.create_task(
                run_consumer(
                    settings.with_overrides(consumer_app_name=f"clean-{kind}"), kind, stop, m
                )
            )
            for kind, m in (("dynamodb", dynamodb), ("s3", s3))
        ]
        async with asyncio.timeout(120):
            while (
                dynamodb.value(Counters.DYNAMODB_ITEMS_WRITTEN) < events
                or s3.value(Counters.S3_RECORDS_WRITTEN) < events
            ):
                await asyncio.sleep(0.2)
                for task in tasks:
                    if task.done():
                        task.result()
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
