"""Throttling, 500s and a crawling DynamoDB: nothing is lost, retries show in /metrics, SIGTERM
stays prompt."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.pipeline import (
    count_items,
    latest_event_times,
    launch_consumer,
    provisioned,
    published,
)
from tests.support.system import (
    SEED,
    SYMBOLS,
    ExchangeThread,
    as_record,
    behind_proxies,
    comparable,
    envelope,
    exact,
    header,
    history_of,
    history_table,
    operation,
    payload,
    s3_rows,
    scrape,
    stop_all,
    stream_records,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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


def latest_rows(aws: AwsClients, settings: Settings) -> dict[str, int]:
    return latest_event_times(aws, settings.dynamo_latest_table_name)


@pytest.mark.timeout(180)
def test_throttling_and_server_errors_lose_nothing_and_show_as_retries(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    injector = FaultInjector(random.Random(SEED))
    sent = [payload(i) for i in range(3_000)]
    newest = {s: max(d["E"] for d in sent if d["s"] == s) for s in SYMBOLS}
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
            # Latest rows are written after history rows and may still be retrying: wait for
            # them too before stopping, or a retry still under way shows as a stale row.
            until(processes, lambda: latest_rows(aws, settings) == newest, 60)
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
    assert latest_rows(aws, settings) == newest
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
