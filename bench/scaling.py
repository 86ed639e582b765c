"""Consumer scaling: 1, 2 and 4 worker processes of one consumer group on a 4-shard stream.

For each sink, a backlog of N records is published, then K `crypto-live consume <sink>`
processes start together and share the shards through the lease table; the clock runs until
the sink holds every record (summed from the workers' /metrics). On this machine the workers,
the embedded AWS (one moto process) and this script share two cores, so the table shows how
the lease protocol spreads the work and what the workers themselves use ("worker CPU", cores
busy while draining), not AWS's capacity: whatever the workers leave, moto takes.
Run `python -m bench.scaling` from the repository root (`--help` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import machine, moto_server, publish, reset_account
from bench.dynamodb_consumer import market_records
from crypto_live.aws import AwsClients
from crypto_live.embedded import DUMMY_CREDENTIALS
from crypto_live.metrics import Counters
from crypto_live.provision import provision
from crypto_live.settings import load_settings

SHARDS = 4
WORKERS = (1, 2, 4)
WRITTEN = {"dynamodb": Counters.DYNAMODB_ITEMS_WRITTEN, "s3": Counters.S3_RECORDS_WRITTEN}
# Lease timing as in the integration tests, so balancing settles in seconds; S3 windows of
# 1 s so the last batches close right after the backlog is read (as bench.s3_consumer does).
WORKER_ENV = {
    "FAILOVER_SECONDS": "3",
    "SHARD_DISCOVERY_SECONDS": "2",
    "MAX_BATCH_TIMEOUT": "1",
    "BATCH_GRACE_MS": "200",
    "METRICS_PORT": "0",
    "METRICS_HOST": "127.0.0.1",
}


@dataclass(frozen=True, slots=True)
class Row:
    sink: str
    workers: int
    records: int
    wall_seconds: float  # from starting the processes until the sink held everything
    drain_seconds: float  # from the first record written
    worker_cpu_seconds: float  # all workers together, while draining
    shards_per_worker: list[int]

    @property
    def records_per_s(self) -> float:
        return self.records / self.drain_seconds


class Worker:
    """One consumer worker process, logging to a file."""

    def __init__(self, sink: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crypto_live.cli", "consume", sink],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._port: int | None = None

    def written(self, counter: str) -> float:
        """The worker's counter from /metrics; 0 until it serves them."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited {self.proc.returncode}: {self.log.read_text()}")
        if self._port is None:
            for line in self.log.read_text().splitlines():
                message = json.loads(line).get("message", "") if line.startswith("{") else ""
                if message.startswith("metrics and health on port"):
                    self._port = int(message.split()[5])
            if self._port is None:
                return 0.0
        url = f"http://127.0.0.1:{self._port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for sample in response.read().decode().splitlines():
                if sample.startswith(counter.removesuffix("_total") + "_total{"):
                    return float(sample.rsplit(" ", 1)[1])
        return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker so far (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(endpoint: str, sink: str, workers: int, records: list[dict[str, object]]) -> Row:
    reset_account(endpoint)
    settings = load_settings(aws_endpoint_url=endpoint, kinesis_shard_count=SHARDS)
    clients = AwsClients(settings)
    provision(settings, clients)
    publish(settings, clients, records)
    logs = Path(tempfile.mkdtemp(prefix=f"bench-scaling-{sink}-{workers}-"))
    env = {**WORKER_ENV, "AWS_ENDPOINT_URL": endpoint}
    started = time.perf_counter()
    procs = [Worker(sink, env, logs / f"worker{i}.log") for i in range(workers)]
    first: float | None = None
    cpu_at_first = 0.0
    try:
        while True:
            written = sum(p.written(WRITTEN[sink]) for p in procs)
            now = time.perf_counter()
            if first is None and written > 0:
                first, cpu_at_first = now, sum(p.cpu_seconds() for p in procs)
            if written >= len(records):
                cpu = sum(p.cpu_seconds() for p in procs) - cpu_at_first
                break
            if now - started > 600:
                raise RuntimeError(f"{sink} x{workers}: only {written} of {len(records)} written")
            time.sleep(0.1)
        leases = clients.dynamodb.scan(TableName=f"crypto-live-{sink}-leases")["Items"]
        owners = Counter(item.get("lease_owner", {}).get("S") for item in leases)
    finally:
        for proc in procs:
            proc.stop()
        clients.close()
    shutil.rmtree(logs)  # kept only when the run failed
    return Row(
        sink,
        workers,
        len(records),
        now - started,
        now - (first or started),
        cpu,
        sorted(owners.values(), reverse=True),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dynamodb-records", type=int, default=20_000)
    parser.add_argument("--s3-records", type=int, default=100_000)
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)))
    args = parser.parse_args(argv)
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    counts = [int(n) for n in args.workers.split(",")]
    backlog = {"dynamodb": args.dynamodb_records, "s3": args.s3_records}
    print(f"machine: {machine()}")
    print(
        f"backlog on a {SHARDS}-shard stream (200 symbols, KPL-aggregated), K worker processes "
        "of one group; FAILOVER_SECONDS 3, S3 windows 1 s"
    )
    rows: list[Row] = []
    with moto_server() as endpoint:
        for sink in ("dynamodb", "s3"):
            records = [dict(r) for r in market_records(backlog[sink])]
            rows.extend(run(endpoint, sink, k, records) for k in counts)
    print(
        f"\n{'sink':<10}{'workers':>8}{'records':>9}{'wall s':>8}{'drain s':>9}"
        f"{'records/s':>11}{'vs 1':>7}{'worker CPU':>12}  shards per worker"
    )
    base: dict[str, float] = {}
    for row in rows:
        base.setdefault(row.sink, row.records_per_s)
        print(
            f"{row.sink:<10}{row.workers:>8}{row.records:>9,}{row.wall_seconds:>8.1f}"
            f"{row.drain_seconds:>9.1f}{row.records_per_s:>11,.0f}"
            f"{row.records_per_s / base[row.sink]:>6.2f}x"
            f"{row.worker_cpu_seconds / row.drain_seconds:>7.2f} cores  {row.shards_per_worker}"
        )


if __name__ == "__main__":
    main()
