"""A DynamoDB consumer group of several worker processes, on both Kinesis backends (moto and
kinesis-mock, see tests/conftest.py) with moto for DynamoDB."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.aws import AwsClients
from core.settings import Settings
from tests.support.pipeline import (
    ServiceProcess,
    count_items,
    latest_event_times,
    launch_consumer,
    make_record,
    provisioned,
    publish,
    published,
    scan_all,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

LEASES = "crypto-live-dynamodb-leases"
FAILOVER = 3.0
SETTLE_SECONDS = 180
DECIMALS = ("close_price", "open_price", "high_price", "low_price", "base_volume", "quote_volume")


def owners(aws: AwsClients) -> dict[str, str | None]:
    items = aws.dynamodb.scan(TableName=LEASES, ConsistentRead=True)["Items"]
    return {i["shard_id"]["S"]: i.get("lease_owner", {}).get("S") for i in items}


def assert_table_equals(aws: AwsClients, settings: Settings, records: list[dict[str, Any]]) -> None:
    items = scan_all(aws, settings.dynamo_table_name)
    present = {(i["stream_type"]["S"], i["iso_timestamp"]["S"]) for i in items}
    missing = [
        r["symbol"] for r in records if (r["stream_type"], r["iso_timestamp"]) not in present
    ]
    assert len(items) == len(records), f"{len(missing)} missing, by symbol {Counter(missing)}"
    by_key = {(i["stream_type"]["S"], i["iso_timestamp"]["S"]): i for i in items}
    assert len(by_key) == len(records)  # exactly once: one item per event
    for record in records:
        item = by_key[(record["stream_type"], record["iso_timestamp"])]
        assert item["symbol"]["S"] == record["symbol"]
        assert int(item["event_time"]["N"]) == record["event_time"]
        assert int(item["expires_at"]["N"]) == record["event_time"] // 1000 + 86_400
        for field in DECIMALS:
            assert Decimal(item[field]["N"]) == Decimal(record[field])
    latest = latest_event_times(aws, settings.dynamo_latest_table_name)
    newest: dict[str, int] = {}
    for record in records:
        newest[record["symbol"]] = max(newest.get(record["symbol"], 0), record["event_time"])
    assert latest == newest


def test_three_workers_share_four_shards_exactly_once(
    kinesis_backend: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(kinesis_backend, aws, 4)
    records = published(settings, aws, range(10_000))

    workers = [launch_consumer(settings, "dynamodb", tmp_path / f"worker{i}.log") for i in range(3)]
    samples: list[dict[str, str | None]] = []
    try:
        wait_until(lambda: len(owners(aws)) == 4 if _table_exists(aws) else False, 30)
        # Generous for a busy machine (lease steals and takeovers cost a few renew intervals
        # each there); the loop ends as soon as both hold, within seconds on an idle one.
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            samples.append(owners(aws))
            spread = Counter(o for o in samples[-1].values() if o)
            done = count_items(aws, settings.dynamo_table_name) == len(records)
            if done and len(spread) == 3 and sorted(spread.values()) == [1, 1, 2]:
                break
            time.sleep(0.5)
        final = samples[-1]
        health, scrape = scrape_service(workers[0])
    finally:
        codes = [worker.terminate() for worker in workers]

    assert codes == [0, 0, 0]  # SIGTERM: finish, checkpoint, release, exit 0
    # A running worker answers /healthz and /metrics (ECS health check, Prometheus).
    assert health["status"] == "ok"
    assert 'crypto_live_records_consumed_total{service="consumer-dynamodb"}' in scrape
    assert "crypto_live_end_to_end_seconds_count" in scrape
    # Each shard had exactly one owner in every sample, and load ends spread 1-2 each.
    assert all(len(sample) == 4 for sample in samples)
    assert sorted(Counter(final.values()).values()) == [1, 1, 2]
    assert_table_equals(aws, settings, records)
    # Released on shutdown so other workers could take over at once.
    assert set(owners(aws).values()) == {None}


def scrape_service(service: ServiceProcess) -> tuple[dict[str, Any], str]:
    """/healthz and /metrics of a service, on the port it logged."""
    base = service.base_url()
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            health = json.loads(response.read())
    except urllib.error.HTTPError as err:
        health = json.loads(err.read())
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        return health, response.read().decode()


def _table_exists(aws: AwsClients) -> bool:
    return LEASES in aws.dynamodb.list_tables()["TableNames"]


def test_sigkilled_worker_shards_are_taken_over_from_the_checkpoint(
    kinesis_backend: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(kinesis_backend, aws, 4)
    first = published(settings, aws, range(6_000))
    later = [make_record(i) for i in range(6_000, 10_000)]
    a = launch_consumer(settings, "dynamodb", tmp_path / "a.log")
    b = launch_consumer(settings, "dynamodb", tmp_path / "b.log")
    try:
        wait_until(
            lambda: (
                _table_exists(aws)
                and sorted(Counter(o for o in owners(aws).values() if o).values()) == [2, 2]
                and count_items(aws, settings.dynamo_table_name) == len(first)
            ),
            60,
        )
        producer = threading.Thread(target=publish, args=(settings, aws, later))
        producer.start()
        time.sleep(0.3)
        victim_id = next(o for o in owners(aws).values() if o and f":{a.proc.pid}:" in o)
        a.kill()  # SIGKILL: no release, no final checkpoint
        killed_at = time.monotonic()
        time.sleep(0.5)  # a checkpoint request already on the wire may still land
        victim_shards = sorted(s for s, o in owners(aws).items() if o == victim_id)
        checkpoints = {
            i["shard_id"]["S"]: (i["checkpoint"]["S"], i["checkpoint_sub"]["N"])
            for i in aws.dynamodb.scan(TableName=LEASES, ConsistentRead=True)["Items"]
        }
        assert len(victim_shards) == 2
        wait_until(
            lambda: all(owners(aws)[s] not in (None, victim_id) for s in victim_shards), 20, 0.1
        )
        takeover = time.monotonic() - killed_at
        producer.join()
        wait_until(lambda: count_items(aws, settings.dynamo_table_name) == 10_000, 60, 1)
    finally:
        code = b.terminate()

    assert takeover <= 2 * FAILOVER, f"takeover took {takeover:.1f}s"
    assert code == 0
    assert_table_equals(aws, settings, first + later)
    # The survivor resumed each victim shard at the victim's last checkpoint.
    resumed = [m for m in b.messages() if m.startswith("reading ")]
    for shard in victim_shards:
        sequence, sub = checkpoints[shard]
        # A shard the victim had taken but not yet checkpointed resumes at its start position.
        where = f"checkpoint {sequence}:{sub}" if sequence.isdigit() else sequence
        expected = f"reading {shard} from {where}"
        assert expected in resumed, (expected, resumed)
