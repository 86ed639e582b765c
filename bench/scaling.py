"""Consumer scaling: 1, 2 and 4 worker processes of one consumer group on a 4-shard stream.

For each sink, a backlog of N records is published, then K `crypto-live consume <sink>`
processes start together and share the shards through the lease table; the clock runs until
the sink holds every record (summed from the workers' /metrics). On this machine the workers,
the embedded AWS (one moto process) and this script share two cores, so the table shows how
the lease protocol spreads the work and what the workers themselves use ("worker CPU", cores
busy while draining) and moto's one process, not AWS's capacity: whatever the workers leave,
moto takes. Run `python -m bench.scaling` from the repository root; it saves its README
"Performance" rows (bench.report); `--quick` for a smoke run that saves nothing.
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    MotoProcess,
    bench_parser,
    load_average,
    machine,
    market_records,
    moto_process,
    process_cpu_seconds,
    publish,
    reset_account,
    save_results,
)
from core.aws import AwsClients
from core.metrics import Counters
from core.settings import load_settings
from crypto_live.embedded import DUMMY_CREDENTIALS
from crypto_live.provision import provision

SHARDS = 4
WORKERS = (1, 2, 4)
BACKLOG = {"dynamodb": 20_000, "s3": 100_000}
QUICK_WORKERS = (1, 2)
QUICK_BACKLOG = {"dynamodb": 1_000, "s3": 5_000}
SINK_NAMES = {"dynamodb": "DynamoDB", "s3": "S3"}
# "Flat": no worker count beat one worker by this much. moto serves from one Python process,
# which cannot keep much more than one core busy: at this much it is saturated.
FLAT_SPEEDUP = 1.25
MOTO_SATURATED_CORES = 0.8
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
    moto_cpu_seconds: float  # moto's process, while draining
    shards_per_worker: list[int]

    @property
    def records_per_s(self) -> float:
        return self.records / self.drain_seconds

    @property
    def worker_cores(self) -> float:
        return self.worker_cpu_seconds / self.drain_seconds

    @property
    def moto_cores(self) -> float:
        return self.moto_cpu_seconds / self.drain_seconds


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
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(moto: MotoProcess, sink: str, workers: int, records: list[dict[str, object]]) -> Row:
    endpoint = moto.endpoint
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
    cpu_at_first = moto_at_first = 0.0
    try:
        while True:
            written = sum(p.written(WRITTEN[sink]) for p in procs)
            now = time.perf_counter()
            if first is None and written > 0:
                first, cpu_at_first = now, sum(p.cpu_seconds() for p in procs)
                moto_at_first = moto.cpu_seconds()
            if written >= len(records):
                cpu = sum(p.cpu_seconds() for p in procs) - cpu_at_first
                moto_cpu = moto.cpu_seconds() - moto_at_first
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
        moto_cpu,
        sorted(owners.values(), reverse=True),
    )


def readme_row(sink: str, rows: Sequence[Row], moto_bound: bool) -> tuple[str, str]:
    """'consumer scaling, 4 shards, 1 / 2 / 4 workers, S3 (100,000 backlog)' and its rates."""
    label = (
        f"consumer scaling, {SHARDS} shards, {' / '.join(str(r.workers) for r in rows)} "
        f"workers, {SINK_NAMES[sink]} ({rows[0].records:,} backlog)"
    )
    result = (
        " / ".join(f"{r.records_per_s:,.0f}" for r in rows)
        + " records/s ("
        + ("moto-bound; " if moto_bound else "")
        + "worker CPU "
        + " / ".join(f"{r.worker_cores:.2f}" for r in rows)
        + ", moto "
        + " / ".join(f"{r.moto_cores:.2f}" for r in rows)
        + " cores; shards "
        + " / ".join("+".join(map(str, r.shards_per_worker)) for r in rows)
        + ")"
    )
    return label, result


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """'0.86-0.92', or one value when they print the same."""
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low} to {high}"


CORES = os.cpu_count() or 1
BUSY_SHARE = 0.85  # workers and moto together using this share of the cores: CPU-bound


def note(by_sink: dict[str, list[Row]], flat: dict[str, bool], load: str) -> str:
    """What the numbers show, in words: flat or not, who was busy, whether leases spread."""
    percent, cores = "{:+.0%}".format, "{:.2f}".format
    changes = []
    for sink, rows in by_sink.items():
        if len(rows) > 1:
            change = [r.records_per_s / rows[0].records_per_s - 1 for r in rows[1:]]
            changes.append(f"{SINK_NAMES[sink]} {spread(change, percent)}")
    all_rows = [r for rows in by_sink.values() for r in rows]
    text = f"Consumer scaling (load average {load} when it started): "
    if changes:
        text += f"more workers than one changed records/s by {'; '.join(changes)}, while "
    text += (
        f"moto's one process kept {spread([r.moto_cores for r in all_rows], cores)} cores busy "
        f"and the workers together {spread([r.worker_cores for r in all_rows], cores)}"
    )
    unbalanced = sum(1 for r in all_rows if r.workers > 1 and len(r.shards_per_worker) == 1)
    if unbalanced:
        text += (
            f" (in {unbalanced} multi-worker run(s) one worker still held every shard when the "
            "backlog was drained)"
        )
    reasons = []
    for sink, rows in by_sink.items():
        if len(rows) < 2 or not flat[sink]:
            continue
        if min(r.moto_cores for r in rows) >= MOTO_SATURATED_CORES:
            reasons.append(f"{SINK_NAMES[sink]} is bound by moto's one busy core")
        elif max(r.moto_cores + r.worker_cores for r in rows) >= BUSY_SHARE * CORES:
            reasons.append(f"{SINK_NAMES[sink]} by the machine's {CORES} busy cores")
        else:
            reasons.append(f"{SINK_NAMES[sink]} by neither moto nor the CPU alone")
    if reasons:
        return text + ". Flat: " + "; ".join(reasons) + "."
    return text + "."


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--dynamodb-records", type=int, help=f"default {BACKLOG['dynamodb']:,}")
    parser.add_argument("--s3-records", type=int, help=f"default {BACKLOG['s3']:,}")
    parser.add_argument("--workers", help=f"default {','.join(map(str, WORKERS))}")
    args = parser.parse_args(argv)
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    defaults = (QUICK_BACKLOG, QUICK_WORKERS) if args.quick else (BACKLOG, WORKERS)
    counts = [int(n) for n in args.workers.split(",")] if args.workers else list(defaults[1])
    backlog = {
        "dynamodb": args.dynamodb_records or defaults[0]["dynamodb"],
        "s3": args.s3_records or defaults[0]["s3"],
    }
    load = load_average()
    print(f"machine: {machine()}")
    print(
        f"backlog on a {SHARDS}-shard stream (200 symbols, KPL-aggregated), K worker processes "
        f"of one group; FAILOVER_SECONDS 3, S3 windows 1 s; load average {load}"
    )
    by_sink: dict[str, list[Row]] = {}
    with moto_process() as moto:
        for sink in ("dynamodb", "s3"):
            records = [dict(r) for r in market_records(backlog[sink])]
            by_sink[sink] = [run(moto, sink, k, records) for k in counts]
    print(
        f"\n{'sink':<10}{'workers':>8}{'records':>9}{'wall s':>8}{'drain s':>9}"
        f"{'records/s':>11}{'vs 1':>7}{'worker CPU':>12}{'moto CPU':>12}  shards per worker"
    )
    for rows in by_sink.values():
        for row in rows:
            print(
                f"{row.sink:<10}{row.workers:>8}{row.records:>9,}{row.wall_seconds:>8.1f}"
                f"{row.drain_seconds:>9.1f}{row.records_per_s:>11,.0f}"
                f"{row.records_per_s / rows[0].records_per_s:>6.2f}x"
                f"{row.worker_cores:>7.2f} cores{row.moto_cores:>7.2f} cores  "
                f"{row.shards_per_worker}"
            )
    flat = {
        sink: max(r.records_per_s for r in rows) < FLAT_SPEEDUP * rows[0].records_per_s
        for sink, rows in by_sink.items()
    }
    moto_bound = {
        sink: flat[sink] and min(r.moto_cores for r in rows) >= MOTO_SATURATED_CORES
        for sink, rows in by_sink.items()
    }
    save_results(
        args.quick,
        "scaling",
        [readme_row(sink, rows, moto_bound[sink]) for sink, rows in by_sink.items()],
        note(by_sink, flat, load),
    )


if __name__ == "__main__":
    main()
