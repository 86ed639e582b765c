"""Fault tests: SIGKILLs, throttling and 500s, bad input, dropped websockets; nothing is lost.

Every service runs as a real process against moto over HTTP: behind fault-injecting proxies
where the test is about AWS, and fed by a local websocket exchange where it is about input.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import signal
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from consumers.app import run_consumer
from consumers.dynamodb.items import history_item, ticker_attributes
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.embedded import _free_port
from crypto_live.exchange.server import SimulatedExchange
from crypto_live.provision import provision
from tests.fault_proxy import Decision, Fault, FaultProxy
from tests.kinesis_reading import read_stream
from tests.pipeline import (
    BASE_MS,
    ServiceProcess,
    count_items,
    latest_event_times,
    launch_consumer,
    launch_producer,
    provisioned,
    published,
    scan_all,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20_261_123
SYMBOLS = [f"SYM{i}USDT" for i in range(16)]
# Short S3 windows so batches close within a test (and the default 2 s grace after each).
S3_WINDOW = {"MAX_BATCH_TIMEOUT": "2"}
HISTORY_KEY = ("stream_type", "iso_timestamp")

_T = TypeVar("_T")
Launch = Callable[[Path], ServiceProcess]  # starts a service, logging to the given file


# -- building blocks -------------------------------------------------------------------------


class ExchangeThread:
    """A scripted SimulatedExchange on its own event loop, for producers run as processes."""

    def __init__(self, **options: Any) -> None:
        self._options = {"autotick": False, "seed": SEED, **options}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.exchange: SimulatedExchange

    def __enter__(self) -> ExchangeThread:
        self._thread.start()

        async def start() -> SimulatedExchange:
            exchange = SimulatedExchange(**self._options)
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


# -- 1. SIGKILL every service, three rounds ----------------------------------------------------


@dataclass
class KillSwitch:
    """Proxy decisions for one service: counts its data writes and can SIGKILL it right after
    the k-th was applied upstream, before the service sees the answer."""

    write_op: str
    pid: int = 0
    writes: int = 0
    kill_at: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, method: str, path: str, headers: dict[str, str]) -> Any:
        if operation(method, path, headers) != self.write_op:
            return None
        with self.lock:
            self.writes += 1
            if self.kill_at is None or self.writes < self.kill_at:
                return None
            self.kill_at, pid = None, self.pid
        return lambda: os.kill(pid, signal.SIGKILL)

    def arm(self, after: int) -> None:
        with self.lock:
            self.kill_at = self.writes + after


@dataclass
class ChaosService:
    """One service process behind its own proxy, restarted after every kill."""

    name: str
    launch: Launch
    switch: KillSwitch
    max_writes: int  # a kill "after write k" picks k in 1..max_writes
    log_dir: Path
    proc: ServiceProcess | None = None
    started_writes: int = 0

    def start(self) -> ServiceProcess:
        self.started_writes = self.switch.writes
        log = self.log_dir / f"{self.name}-{len(list(self.log_dir.glob(self.name + '-*')))}.log"
        self.proc = self.launch(log)
        self.switch.pid = self.proc.proc.pid
        return self.proc

    def active(self) -> bool:
        """It is up and wrote data since it (re)started."""
        assert self.proc is not None
        return running(self.proc) and self.switch.writes > self.started_writes

    def kill(self, rng: random.Random) -> str:
        """SIGKILL at a seeded random point: right after a write, or some time from now."""
        assert self.proc is not None
        wait_until(self.active, 60, 0.05)
        if rng.random() < 0.5:
            after = rng.randint(1, self.max_writes)
            self.switch.arm(after)
            how = f"after write {after}"
        else:
            delay = rng.uniform(0.1, 2.0)
            time.sleep(delay)
            self.proc.proc.kill()
            how = f"at +{delay:.1f}s"
        assert self.proc.wait(timeout=60) == -signal.SIGKILL, self.proc.messages()[-3:]
        return f"{self.name} {how}"


@pytest.mark.timeout(240)
def test_sigkill_every_service_three_rounds_matches_a_fault_free_run(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    clean = settings.with_overrides(
        dynamo_table_name="clean-miniticker",
        dynamo_latest_table_name="clean-ticker-latest",
        s3_jsonl_dir_path="clean",
        max_batch_timeout=2,
        failover_seconds=3,
        shard_discovery_seconds=2,
        idle_time_between_reads_ms=100,
    )
    provision(clean, aws)
    port = _free_port("127.0.0.1")
    exchange = ServiceProcess(
        ["exchange", "--port", str(port), "--symbols", "50", "--rate", "5"], {}, tmp_path / "x.log"
    )
    rng = random.Random(SEED)
    switches = {
        "producer": KillSwitch("Kinesis.PutRecords"),
        "dynamodb": KillSwitch("DynamoDB.BatchWriteItem"),
        "s3": KillSwitch("S3.PUT"),
    }
    max_writes = {"producer": 20, "dynamodb": 20, "s3": 4}
    kills: list[str] = []
    with behind_proxies(settings, f"ws://127.0.0.1:{port}/", switches.__getitem__) as launch:
        producer, dynamodb, s3 = services = [
            ChaosService(name, launch[name], switches[name], max_writes[name], tmp_path)
            for name in launch
        ]
        try:
            for service in services:
                service.start()
            for _ in range(3):
                for service in rng.sample(services, len(services)):
                    kills.append(service.kill(rng))
                    service.start()
            for service in services:
                wait_until(service.active, 60, 0.05)
            time.sleep(1)
            last_producer = producer.proc
            assert last_producer is not None and last_producer.terminate() == 0
            assert exchange.terminate() == 0

            records = stream_records(aws, settings)
            unique = dedupe_retries(records)
            consumers = [s.proc for s in (dynamodb, s3) if s.proc is not None]
            until(
                consumers, lambda: count_items(aws, settings.dynamo_table_name) >= len(unique), 90
            )
            until(consumers, lambda: len(s3_rows(aws, settings)) >= len(unique), 90)
            assert [consumer.terminate() for consumer in consumers] == [0, 0]
        finally:
            stop_all(exchange, *(service.proc for service in services))

    print(
        f"\n{len(records)} records in Kinesis ({len(records) - len(unique)} retry duplicates), "
        f"SIGKILLs: {', '.join(kills)}"
    )
    assert len(kills) == 9 and len(unique) > 1_000
    # The surviving producer put everything it read: at-least-once from its connection on.
    summary = next(m for m in last_producer.messages() if m.startswith("producer stopped: "))
    found = re.search(r"(\d+) valid records.* (\d+) records put.* 0 undelivered", summary)
    assert found and found.group(1) == found.group(2), summary
    consume_fault_free(clean, len(unique))

    # DynamoDB: every event in Kinesis exactly once, and equal to the fault-free run's tables.
    history = history_table(aws, settings.dynamo_table_name)
    assert history == history_of(settings, unique)
    assert history == history_table(aws, clean.dynamo_table_name)
    latest = keyed(scan_all(aws, settings.dynamo_latest_table_name), ("symbol",))
    newest: dict[str, dict[str, Any]] = {}
    for record in sorted(unique, key=lambda r: r["event_time"]):
        newest[record["symbol"]] = record
    assert latest == {(symbol,): ticker_attributes(r) for symbol, r in newest.items()}
    assert latest == keyed(scan_all(aws, clean.dynamo_latest_table_name), ("symbol",))
    # S3: the fault-free run's keys and bytes; every event once.
    lake = s3_objects(aws, settings.s3_bucket, settings.s3_jsonl_dir_path)
    assert lake == s3_objects(aws, settings.s3_bucket, "clean")
    assert sorted(map(exact, s3_rows(aws, settings))) == sorted(map(exact, unique))
    assert not dead_letters(aws, settings, "crypto-live-dynamodb")
    assert not dead_letters(aws, settings, "crypto-live-s3")


def dedupe_retries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream's records, one per event; fails on two different records of one event.

    A killed producer never re-puts anything, so a second copy of an event may only be a
    PutRecords retry: identical to the first (same ``received_at``), and dropped by the sinks.
    """
    by_event: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        first = by_event.setdefault((record["stream_type"], record["event_time"]), record)
        assert first == record, f"two different records of one event: {first} {record}"
    return list(by_event.values())


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


# -- 2. throttling and 500s ------------------------------------------------------------------


def _json_error(status: int, error_type: str, message: str, *, dynamodb: bool = False) -> Fault:
    content_type = "application/x-amz-json-1.0" if dynamodb else "application/x-amz-json-1.1"
    body = json.dumps({"__type": error_type, "message": message}).encode()
    # A 500 may come after the write was applied: safe to forward only for idempotent writes.
    return Fault(status, body, content_type, forward=dynamodb and status == 500)


def _s3_error(status: int, code: str, message: str) -> Fault:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
        "</Message><RequestId>FAULT</RequestId><HostId>FAULT</HostId></Error>"
    )
    return Fault(status, body.encode(), "application/xml", forward=status == 500)


_KINESIS = (
    _json_error(400, "ProvisionedThroughputExceededException", "Rate exceeded for shard"),
    _json_error(500, "InternalFailure", "Internal service failure."),
)
_DYNAMODB = (
    _json_error(
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
        dynamodb=True,
    ),
    _json_error(
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
        dynamodb=True,
    ),
    _json_error(
        500,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
        dynamodb=True,
    ),
)
# What AWS answers when it throttles or fails, per operation (PutItem: latest rows and new
# leases; UpdateItem: leases).
FAULTS: dict[str, tuple[Fault, ...]] = {
    "Kinesis.PutRecords": _KINESIS,  # never applied: a retry would put the aggregate twice
    "Kinesis.GetRecords": _KINESIS,
    "DynamoDB.BatchWriteItem": _DYNAMODB,
    "DynamoDB.UpdateItem": _DYNAMODB,
    "DynamoDB.PutItem": _DYNAMODB,
    "S3.PUT": (
        _s3_error(503, "SlowDown", "Please reduce your request rate."),
        _s3_error(500, "InternalError", "We encountered an internal error. Please try again."),
    ),
}


@dataclass
class FaultInjector:
    """Fails a share of calls, per botocore invocation (the retries of one call share an id).

    One call in 11 fails on its first attempt only: botocore's own retry absorbs it. One in
    33 (and, so that every retry path surely runs, the 2nd and 4th call of each operation of
    each service) fails on every attempt botocore makes (4: ``max_attempts=3`` counts
    retries), so the error reaches our retry code and its metrics. A fifth to a quarter of
    the requests fail. ``for_service`` gives each service's proxy its decisions.
    """

    rng: random.Random
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    exhausted: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    _plans: dict[str, tuple[int, Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def for_service(self, service: str) -> Callable[[str, str, dict[str, str]], Fault | None]:
        return lambda method, path, headers: self.decide(service, method, path, headers)

    def decide(self, service: str, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        op = operation(method, path, headers)
        if op not in FAULTS:
            return None
        fields = dict(
            part.strip().split("=", 1)
            for part in header(headers, "amz-sdk-request").split(";")
            if "=" in part
        )
        attempt, attempts = int(fields.get("attempt", 1)), int(fields.get("max", 1))
        with self._lock:
            self.requests[op] += 1
            invocation = header(headers, "amz-sdk-invocation-id")
            if invocation not in self._plans:
                self.calls[service, op] += 1
                roll = self.rng.random()
                failing = 1 if roll < 0.12 else 0
                if self.calls[service, op] in (2, 4) or roll < 0.03:
                    failing = attempts
                self._plans[invocation] = (failing, self.rng.choice(FAULTS[op]))
            failing, fault = self._plans[invocation]
            if attempt > failing:
                return None
            self.faults[op] += 1
            self.exhausted[service, op] += attempt == attempts
            return fault

    @property
    def share(self) -> float:
        return sum(self.faults.values()) / max(1, sum(self.requests.values()))


@pytest.mark.timeout(180)
def test_throttling_and_server_errors_lose_nothing_and_show_as_retries(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    injector = FaultInjector(random.Random(SEED))
    sent = [payload(i) for i in range(3_000)]
    with (
        ExchangeThread() as exchange,
        behind_proxies(settings, exchange.exchange.url, injector.for_service) as launch,
    ):
        services = {name: run(tmp_path / f"{name}.log") for name, run in launch.items()}
        processes = list(services.values())
        try:
            exchange.wait_for_connections(1)
            for start in range(0, len(sent), 200):  # data keeps flowing while faults land
                exchange.send([envelope(data) for data in sent[start : start + 200]])
                time.sleep(0.25)
            until(processes, lambda: count_items(aws, settings.dynamo_table_name) >= 3_000, 120)
            until(processes, lambda: len(s3_rows(aws, settings)) >= 3_000, 120)
            scraped = {name: scrape(service) for name, service in services.items()}
            codes = [service.terminate() for service in processes]
        finally:
            stop_all(*processes)

    print(
        f"\ninjected {sum(injector.faults.values())} faults into "
        f"{sum(injector.requests.values())} requests ({injector.share:.0%}); calls that failed "
        f"every attempt: {sorted(f'{s} {op} x{n}' for (s, op), n in injector.exhausted.items())}"
    )
    assert codes == [0, 0, 0]
    # Exactly the records sent, once each, in Kinesis, DynamoDB and S3.
    records = stream_records(aws, settings)
    assert sorted(map(comparable, records)) == sorted(map(as_record, sent))
    assert history_table(aws, settings.dynamo_table_name) == history_of(settings, records)
    latest = latest_event_times(aws, settings.dynamo_latest_table_name)
    assert latest == {s: max(d["E"] for d in sent if d["s"] == s) for s in SYMBOLS}
    assert sorted(map(exact, s3_rows(aws, settings))) == sorted(map(exact, records))
    # The faults were real (about a fifth of the calls), and some got past botocore's retries
    # to ours, which the services' /metrics show.
    assert injector.share >= 0.15, injector.share
    exhausted = {pair for pair, n in injector.exhausted.items() if n}
    always = {
        ("producer", "Kinesis.PutRecords"),
        ("dynamodb", "Kinesis.GetRecords"),
        ("dynamodb", "DynamoDB.BatchWriteItem"),
        ("dynamodb", "DynamoDB.UpdateItem"),
        ("s3", "Kinesis.GetRecords"),
        ("s3", "S3.PUT"),
        ("s3", "DynamoDB.UpdateItem"),  # its lease table
    }
    # PutItem (latest rows, new leases) is rarer: three faults in a row may not happen.
    sometimes = {("dynamodb", "DynamoDB.PutItem"), ("s3", "DynamoDB.PutItem")}
    assert always <= exhausted <= always | sometimes, injector.exhausted
    assert scraped["producer"][Counters.PUT_RETRIES] > 0
    assert scraped["dynamodb"][Counters.DYNAMODB_CALL_RETRIES] > 0
    assert scraped["dynamodb"][Counters.GET_RECORDS_RETRIES] > 0
    assert scraped["s3"][Counters.S3_PUT_RETRIES] > 0
    assert scraped["s3"][Counters.GET_RECORDS_RETRIES] > 0


@pytest.mark.timeout(120)
def test_sigterm_while_dynamodb_crawls_exits_promptly_and_loses_nothing(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    records = published(settings, aws, range(6_000))

    def crawl(method: str, path: str, headers: dict[str, str]) -> Any:
        # Every BatchWriteItem answers 0.2 s late: a GetRecords batch takes minutes to write.
        slow = operation(method, path, headers) == "DynamoDB.BatchWriteItem"
        return (lambda: time.sleep(0.2)) if slow else None

    slow_env = {"DYNAMODB_MAX_IN_FLIGHT": "1", "SHUTDOWN_TIMEOUT_SECONDS": "1"}
    with (
        FaultProxy(settings.aws_endpoint_url or "", crawl) as proxy,
        launch_consumer(
            settings, "dynamodb", tmp_path / "first.log", AWS_ENDPOINT_URL=proxy.url, **slow_env
        ) as first,
    ):
        until([first], lambda: count_items(aws, settings.dynamo_table_name) >= 100, 60)
        started = time.monotonic()
        code = first.terminate(timeout=30)  # mid-batch, with requests still queued
        stopped_in = time.monotonic() - started
    assert code == 0 and stopped_in < 10, stopped_in
    assert count_items(aws, settings.dynamo_table_name) < len(records)

    with launch_consumer(settings, "dynamodb", tmp_path / "2.log") as second:
        until([second], lambda: count_items(aws, settings.dynamo_table_name) >= 6_000, 90)
        assert second.terminate() == 0
    assert history_table(aws, settings.dynamo_table_name) == history_of(settings, records)


# -- 3. bad input through the websocket --------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad frame, the raw text its dead letter must hold, and a fragment of its reason."""

    frame: str
    raw: str
    reason: str


def bad_message(kind: int, index: int) -> Bad:
    """Fourteen kinds of bad input, each unique per ``index``."""
    symbol = SYMBOLS[index % len(SYMBOLS)]
    data = payload(index, symbol)

    def framed(value: Any, reason: str, stream: str = f"{symbol.lower()}@miniTicker") -> Bad:
        text = envelope(value, stream)
        return Bad(text, text, reason)

    match kind % 14:
        case 0:
            text = f'{{"stream":"{symbol.lower()}@miniTicker","data":{{"E":{index}'
            return Bad(text, text, "malformed JSON")
        case 1:
            return framed({**data, "c": 65000.5 + index}, "field 'c' must be a decimal string")
        case 2:
            return framed({**data, "E": f"soon-{index}"}, "field 'E' is not an integer")
        case 3:
            return framed({**data, "E": 10**30 + index}, "field 'E' out of range")
        case 4:
            return framed({**data, "v": "9" * 40 + str(index)}, "field 'v' is not a plain decimal")
        case 5:
            return framed({k: v for k, v in data.items() if k != "q"}, "missing field 'q'")
        case 6:
            return framed({**data, "e": "trade"}, "unknown event type 'trade'")
        case 7:
            return framed({**data, "s": "ETHBTC"}, "does not match stream symbol")
        case 8:
            text = json.dumps(["no", "envelope", index])
            return Bad(text, text, "message is not a JSON object")
        case 9:
            return framed(data, "unsupported stream", stream=f"{symbol.lower()}@trade")
        case 10:  # a JSON number too big for a float: parsed as inf
            text = envelope(data).replace(f'"c":"{data["c"]}"', f'"c":1e400,"x":{index}')
            return Bad(text, text, "field 'c' must be a decimal string, got number")
        case 11:
            return framed({**data, "l": f"-{index}.5"}, "field 'l' is not a plain decimal")
        case 12:
            return framed(None, "field 'data' is not an object: null")
    element = {**data, "e": "24hrTicker"}  # one bad element of an all-market array
    raw = json.dumps(element, separators=(",", ":"))
    return Bad(envelope([element], "!miniTicker@arr"), raw, "unknown event type '24hrTicker'")


@pytest.mark.timeout(180)
def test_bad_input_is_dead_lettered_and_a_burst_of_100k_keeps_memory_bounded(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    good: list[dict[str, Any]] = []
    bad: list[Bad] = []

    def script(indexes: range, bad_every: int) -> list[str]:
        frames = []
        for index in indexes:
            if index % bad_every == bad_every - 1:
                bad.append(bad_message(index // bad_every, index))
                frames.append(bad[-1].frame)
            else:
                good.append(payload(index))
                frames.append(envelope(good[-1]))
        return frames

    # Phase A: every kind of bad input between good messages, 900 KiB frames (under
    # websockets' 1 MiB limit) of a huge decimal and of junk, and a mixed all-market array.
    phase_a = script(range(280), 2)
    huge = envelope({**payload(1_000, SYMBOLS[0]), "c": "1" * 900 * 1024})
    junk = "x" * 900 * 1024
    mixed = [payload(1_001, SYMBOLS[1]), {**payload(1_002, SYMBOLS[2]), "o": 7}, 42]
    phase_a += [huge, junk, envelope(mixed, "!miniTicker@arr")]
    good.append(mixed[0])
    bad += [
        Bad(huge, huge, "field 'c' is not a plain decimal"),
        Bad(junk, junk, "malformed JSON"),
        Bad("", json.dumps(mixed[1], separators=(",", ":")), "field 'o' must be a decimal string"),
        Bad("", "42", "array element is not a JSON object: number"),
    ]
    # Phase C: a burst of 100,000 messages, one in ten bad.
    burst = script(range(10_000, 110_000), 10)

    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        with RssSampler(producer.proc.pid) as rss:
            exchange.wait_for_connections(1)
            exchange.send(phase_a)
            # Phase B: a 2 MiB frame is over websockets' max_size (1 MiB): the client fails
            # the connection (1009) without reading it, so it cannot be a dead letter; the
            # producer logs it, reconnects and goes on. Frames still buffered in the client
            # then go down with the connection (as in any drop): phase A is read first.
            received = Counters.MESSAGES_RECEIVED
            until([producer], lambda: scrape(producer)[received] >= len(phase_a), 60)
            exchange.send(["[" + "7," * (1024 * 1024) + "7]"])
            exchange.wait_for_connections(2)
            started = time.monotonic()
            exchange.send(burst)
            until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= len(good), 120)
            burst_seconds = time.monotonic() - started
            until([producer], lambda: scrape(producer)[Counters.DEAD_LETTERS] >= len(bad), 60)
            scraped = scrape(producer)
        code = producer.terminate()

    print(
        f"\nburst of 100,000 messages: in Kinesis after {burst_seconds:.1f} s, producer peak "
        f"RSS {rss.peak_kib / 1024:.0f} MiB"
    )
    assert code == 0  # up all along (`until` checked), and a clean exit
    assert rss.peak_kib < 400 * 1024, f"producer RSS peaked at {rss.peak_kib / 1024:.0f} MiB"
    # Every good message in Kinesis exactly once, and nothing else.
    assert sorted(map(comparable, stream_records(aws, settings))) == sorted(map(as_record, good))
    # Every bad one among the dead letters, with its reason.
    letters = dead_letters(aws, settings, "producer")
    assert Counter(letter["raw"] for letter in letters) == Counter(item.raw for item in bad)
    reasons = {item.raw: item.reason for item in bad}
    wrong = [
        (d["reason"], reasons[d["raw"]]) for d in letters if reasons[d["raw"]] not in d["reason"]
    ]
    assert not wrong, wrong[:5]
    assert scraped[Counters.RECORDS_REJECTED] == len(bad)
    assert scraped[Counters.RECONNECTS] == 1
    assert any("1009" in m and "websocket event" in m for m in producer.messages())


class RssSampler:
    """Peak VmRSS (KiB) of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                status = self._status.read_text()
            except OSError:
                return
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            if found:
                self.peak_kib = max(self.peak_kib, int(found.group(1)))


# -- 4. the exchange drops the connection -------------------------------------------------------


@pytest.mark.timeout(120)
def test_dropped_websocket_reconnects_and_continues(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    before = [payload(i) for i in range(500)]
    batches = [[payload(i) for i in range(start, start + 20)] for start in range(1_000, 5_000, 20)]
    connections_at_send: list[int] = []

    async def feed(exchange: SimulatedExchange) -> None:
        for batch in batches:
            connections_at_send.append(exchange.connections_total)
            await exchange.send_script([envelope(data) for data in batch])
            await asyncio.sleep(0.02)

    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        exchange.wait_for_connections(1)
        exchange.send([envelope(data) for data in before])
        until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= 500, 30)
        feeding = exchange.spawn(feed(exchange.exchange))
        time.sleep(0.7)
        exchange.call(exchange.exchange.drop_connections())  # mid-stream, no close frame
        exchange.wait_for_connections(2)
        feeding.result(timeout=60)
        # Whatever was sent once the producer had reconnected must arrive.
        after = [
            data
            for batch, connections in zip(batches, connections_at_send, strict=True)
            if connections >= 2
            for data in batch
        ]
        assert len(after) >= 400, "too little was sent after the reconnection"
        wanted = {(data["s"], data["E"]) for data in before + after}
        until(
            [producer],
            lambda: (
                wanted <= {(r["symbol"], r["event_time"]) for r in stream_records(aws, settings)}
            ),
            30,
        )
        scraped = scrape(producer)
        code = producer.terminate()

    assert code == 0
    assert scraped[Counters.RECONNECTS] == 1
    assert any(m.startswith("reconnected after a gap of") for m in producer.messages())
    events = Counter((r["symbol"], r["event_time"]) for r in stream_records(aws, settings))
    assert max(events.values()) == 1  # nothing twice
    sent = {(data["s"], data["E"]) for data in before + [d for b in batches for d in b]}
    assert set(events) <= sent
    print(f"\nconnection dropped: {len(sent) - len(events)} messages sent in the gap were lost")
