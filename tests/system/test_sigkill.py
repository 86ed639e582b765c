"""SIGKILL every service at random points, three rounds: the sinks equal a fault-free run."""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consumers.dynamodb.items import ticker_attributes
from core.aws import AwsClients
from core.settings import Settings
from crypto_live.provision import provision
from tests.support.emulator import free_port
from tests.support.pipeline import (
    ServiceProcess,
    count_items,
    provisioned,
    scan_all,
    wait_until,
)
from tests.support.system import (
    SEED,
    Launch,
    behind_proxies,
    consume_fault_free,
    dead_letters,
    exact,
    history_of,
    history_table,
    keyed,
    operation,
    running,
    s3_objects,
    s3_rows,
    stop_all,
    stream_records,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    port = free_port("127.0.0.1")
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
