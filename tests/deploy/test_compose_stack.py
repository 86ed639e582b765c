"""The Docker path as the README gives it: `docker compose -f docker-compose.yml -f
docker-compose.sim.yml --profile sim up --build` (plus whatever COMPOSE_FILE adds, e.g. a
host-network override for an engine without a bridge), against LocalStack on 127.0.0.1:4566.
Records reach DynamoDB and S3, a second S3 worker takes one of the two shards, and on stop every
service exits 0 with its shutdown summary. Skips, saying why, without an engine or its images."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.settings import Settings, load_settings
from tests.support.docker import (
    ComposeProject,
    compose_v2_problem,
    docker_engine_problem,
    missing_images,
)
from tests.support.pipeline import count_items, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
LOCALSTACK = "http://127.0.0.1:4566"
IMAGES = ("localstack/localstack:4.14.0", "python:3.11-slim-bookworm")
S3_LEASES = "crypto-live-s3-leases"
# The last line each service logs on a clean stop (exchange and LocalStack have none).
SUMMARIES = {
    "provision": "already there:",
    "producer": "producer stopped:",
    "consumer-dynamodb": "consumer stopped:",
    "consumer-s3": "consumer stopped:",
}


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack() -> Iterator[ComposeProject]:
    """The sim stack's compose project, torn down (containers, volumes; images kept) after."""
    problem = docker_engine_problem() or compose_v2_problem()
    if problem is not None:
        pytest.skip(f"no Docker engine for the compose stack: {problem}")
    missing = missing_images(*IMAGES)
    if missing:
        pytest.skip(f"images missing from the engine (no pull here): {', '.join(missing)}")
    if _port_taken(4566):
        pytest.skip("127.0.0.1:4566 is taken (another LocalStack or emulator)")
    project = ComposeProject(
        f"crypto-live-test-{os.getpid()}",
        [ROOT / "docker-compose.yml", ROOT / "docker-compose.sim.yml"],
        profiles=("sim",),
    )
    try:
        yield project
    finally:
        project.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def _s3_objects(clients: AwsClients, settings: Settings) -> int:
    page = clients.s3.list_objects_v2(
        Bucket=settings.s3_bucket, Prefix=f"{settings.s3_jsonl_dir_path}/"
    )
    return int(page["KeyCount"])


def _s3_owners(clients: AwsClients) -> Counter[str]:
    items = clients.dynamodb.scan(TableName=S3_LEASES, ConsistentRead=True)["Items"]
    return Counter(i["lease_owner"]["S"] for i in items if "lease_owner" in i)


def test_compose_sim_stack_fills_the_stores_scales_and_stops_cleanly(
    stack: ComposeProject,
) -> None:
    started = time.monotonic()
    stack.run("up", "--build", "--detach", timeout=900)
    settings = load_settings(aws_endpoint_url=LOCALSTACK)
    clients = AwsClients(settings)
    timings: dict[str, float] = {"up": time.monotonic() - started}
    try:
        wait_until(lambda: count_items(clients, settings.dynamo_table_name) > 0, 180, 1)
        wait_until(lambda: _s3_objects(clients, settings) > 0, 180, 1)
        timings["records in DynamoDB and S3"] = time.monotonic() - started

        stack.run("up", "--detach", "--no-deps", "--scale", "consumer-s3=2", "consumer-s3")
        # Two shards, two workers: one each, through the lease table.
        wait_until(lambda: sorted(_s3_owners(clients).values()) == [1, 1], 120, 1)
        timings["shards split between two S3 workers"] = time.monotonic() - started
        items = count_items(clients, settings.dynamo_table_name)
        objects = _s3_objects(clients, settings)
    finally:
        clients.close()
        stack.run("stop", "--timeout", "60", timeout=300, check=False)
    timings["stopped"] = time.monotonic() - started
    print(f"compose stack: {timings}; {items} DynamoDB items, {objects} S3 objects")

    containers = stack.containers()
    by_service = Counter(c["Service"] for c in containers)
    assert by_service["consumer-s3"] == 2
    assert set(by_service) >= {"localstack", "exchange", *SUMMARIES}
    for container in containers:
        log = stack.logs(container["Name"])
        assert container["ExitCode"] == 0, (container["Name"], log[-3000:])
        summary = SUMMARIES.get(container["Service"])
        if summary is not None:
            assert summary in log, (container["Name"], log[-3000:])
