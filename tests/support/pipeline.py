"""Test helpers for the consumer side: known records in Kinesis, consumer processes, scans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.aws import AwsClients
from core.settings import Settings
from crypto_live.provision import provision
from producer.kinesis import KinesisStreamWriter
from producer.publisher import publish_records
from schemas.record import iso_timestamp

BASE_MS = 1_795_000_000_000


def make_record(index: int, symbols: int = 16) -> dict[str, Any]:
    """A valid record with a unique (stream_type, iso_timestamp) key per index."""
    symbol = f"SYM{index % symbols}USDT"
    event_time = BASE_MS + index
    iso = iso_timestamp(event_time)
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": f"{100 + index}.{index % 97:02d}000000",
        "open_price": "100.00000000",
        "high_price": f"{200 + index}.00000000",
        "low_price": "0.00100000",
        "base_volume": f"{index}.12345678",
        "quote_volume": f"{index * 7}.87654321",
        "iso_timestamp": iso,
        "received_at": event_time * 1000 + 5,
    }


def ticker(symbol: str, event_time: int, price: str) -> dict[str, Any]:
    """A valid record of one symbol at ``event_time`` (epoch ms) closing at ``price``."""
    return {
        "event_type": "24hrMiniTicker",
        "event_time": event_time,
        "stream_type": f"{symbol.lower()}@miniTicker",
        "symbol": symbol,
        "close_price": price,
        "open_price": "100.00000000",
        "high_price": "120.00000000",
        "low_price": "90.00000000",
        "base_volume": "12345.67800000",
        "quote_volume": "1234567.80000000",
        "iso_timestamp": iso_timestamp(event_time),
        "received_at": event_time * 1000,
    }


def provisioned(aws_settings: Settings, aws: AwsClients, shards: int) -> Settings:
    """``aws_settings`` with ``shards`` Kinesis shards, and its stream, tables and bucket made."""
    settings = aws_settings.with_overrides(kinesis_shard_count=shards)
    provision(settings, aws)
    return settings


def publish(settings: Settings, clients: AwsClients, records: list[dict[str, Any]]) -> None:
    """Put records into the stream through the real producer path (Avro + KPL aggregation)."""
    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    asyncio.run(publish_records(writer, records, 30))


def published(settings: Settings, clients: AwsClients, indexes: range) -> list[dict[str, Any]]:
    """``make_record`` of each index, put into the stream with ``publish``."""
    records = [make_record(i) for i in indexes]
    publish(settings, clients, records)
    return records


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    """Seconds it took for ``condition`` to hold; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


def scan_all(clients: AwsClients, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": table}
    while True:
        page = clients.dynamodb.scan(**params)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def count_items(clients: AwsClients, table: str) -> int:
    total = 0
    params: dict[str, Any] = {"TableName": table, "Select": "COUNT"}
    while True:
        page = clients.dynamodb.scan(**params)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def latest_event_times(clients: AwsClients, table: str) -> dict[str, int]:
    """The latest table as symbol -> event_time."""
    return {i["symbol"]["S"]: int(i["event_time"]["N"]) for i in scan_all(clients, table)}


class ServiceProcess:
    """One `crypto-live` service in its own process, logging JSON lines to a file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, unset: tuple[str, ...] = ()
    ) -> None:
        """``env`` on top of this process's environment, without the variables in ``unset``."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        inherited = {k: v for k, v in os.environ.items() if k not in unset}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crypto_live.cli", *args],
            env={**inherited, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"message": raw})
        return lines

    def messages(self) -> list[str]:
        return [str(line.get("message", "")) for line in self.log_lines()]

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; returns the exit code."""
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        """SIGKILL unless it ended already: it must not outlive its test."""
        if self.proc.poll() is None:
            self.kill()

    def base_url(self) -> str:
        """Its metrics and health server (/metrics, /healthz), on the port it logged."""
        line = next(m for m in self.messages() if m.startswith("metrics and health on port"))
        return f"http://127.0.0.1:{int(line.split()[5])}"


def endpoint_env(settings: Settings) -> dict[str, str]:
    """AWS_ENDPOINT_URL and each per-service AWS_ENDPOINT_URL_<SERVICE> that ``settings`` set."""
    env = {"AWS_ENDPOINT_URL": settings.aws_endpoint_url or ""}
    for name in ("kinesis", "dynamodb", "s3", "secrets_manager"):
        if value := getattr(settings, f"aws_endpoint_url_{name}"):
            env[f"AWS_ENDPOINT_URL_{name.upper()}"] = value
    return env


def consumer_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **endpoint_env(settings),
        "KINESIS_STREAM_NAME": settings.kinesis_stream_name,
        "FAILOVER_SECONDS": "3",
        "SHARD_DISCOVERY_SECONDS": "2",
        "IDLE_TIME_BETWEEN_READS_MS": "100",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def launch_consumer(settings: Settings, kind: str, log_path: Path, **extra: str) -> ServiceProcess:
    """`crypto-live consume <kind>` with ``consumer_env(settings, **extra)``."""
    return ServiceProcess(["consume", kind], consumer_env(settings, **extra), log_path)


def producer_env(settings: Settings, exchange_url: str, endpoint: str) -> dict[str, str]:
    return {
        **endpoint_env(settings),
        "AWS_ENDPOINT_URL": endpoint,
        "KINESIS_STREAM_NAME": settings.kinesis_stream_name,
        "BINANCE_STREAM_URL": exchange_url,
        "BINANCE_STREAMS": "!miniTicker@arr",
        "DEAD_LETTER_FLUSH_SECONDS": "1",
    }


def launch_producer(
    settings: Settings, exchange_url: str, log_path: Path, endpoint: str | None = None
) -> ServiceProcess:
    """`crypto-live producer` reading ``exchange_url``, writing to ``endpoint`` (else AWS's)."""
    env = producer_env(settings, exchange_url, endpoint or settings.aws_endpoint_url or "")
    return ServiceProcess(["producer"], env, log_path)
