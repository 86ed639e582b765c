"""End-to-end latency: simulated exchange -> producer -> Kinesis -> DynamoDB and S3 consumers.

Every service is its own process with default settings, on the embedded AWS (moto's server,
one more process): the exchange ticks SYMBOLS symbols at RATE Hz into the all-market stream,
and each consumer records, per record, the seconds from the producer's ``received_at`` to the
sink's confirmed write and checkpoint (what ``crypto_live_end_to_end_seconds`` observes).
Then a sweep runs the DynamoDB consumer alone at fewer symbols, to find the rate moto can
sustain. Run `python -m bench.latency` from the repository root (`--help` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

from bench.common import machine, moto_server, reset_account
from crypto_live.aws import AwsClients
from crypto_live.embedded import DUMMY_CREDENTIALS, _free_port
from crypto_live.metrics import Counters, Histograms, Metrics
from crypto_live.provision import provision
from crypto_live.settings import load_settings

SINKS = ("dynamodb", "s3")
DYNAMODB_TARGET_P99 = 1.5


class LatencyRecorder(Metrics):
    """Metrics that also keep every end-to-end observation as (durable at, seconds)."""

    def __init__(self, service: str, durable: Synchronized[int]) -> None:
        super().__init__(service)
        self.samples: list[tuple[float, float]] = []
        self._durable = durable

    def observe(self, name: Histograms, value: float) -> None:
        super().observe(name, value)
        if name == Histograms.END_TO_END_SECONDS:
            self.samples.append((time.time(), value))
            with self._durable.get_lock():
                self._durable.value += 1


def consumer_process(
    kind: str,
    endpoint: str,
    stop: Event,
    durable: Synchronized[int],
    out: Connection,
) -> None:
    """One consumer worker (default settings) until ``stop``; sends samples and counters."""
    from consumers.app import run_consumer

    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    settings = load_settings(aws_endpoint_url=endpoint, metrics_port=-1)
    metrics = LatencyRecorder(f"consumer-{kind}", durable)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def relay() -> None:
            stop.wait()
            loop.call_soon_threadsafe(stopping.set)

        threading.Thread(target=relay, daemon=True).start()
        await run_consumer(settings, kind, stopping, metrics)  # type: ignore[arg-type]

    asyncio.run(main())
    out.send((metrics.samples, metrics.snapshot()))


@dataclass(frozen=True, slots=True)
class SinkResult:
    """One sink's latencies for the records received inside the measured window."""

    sink: str
    put: int  # records the producer put inside the window
    latencies: list[float]  # seconds, of those that became durable before the drain ended
    counters: dict[str, float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True, slots=True)
class RunResult:
    symbols: int
    rate: float
    seconds: float
    produced: int  # records put by the producer in the whole run
    sinks: list[SinkResult]
    ticks_skipped: int


def start_service(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crypto_live.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_pipeline(
    endpoint: str,
    *,
    symbols: int,
    rate: float,
    duration: float,
    warmup: float,
    drain: float,
    sinks: Sequence[str],
) -> RunResult:
    """Run exchange, producer and the ``sinks`` consumers; measure records received in the
    window [warmup, warmup + duration] after the producer started."""
    reset_account(endpoint)
    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    provision(settings, clients)
    clients.close()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    consumers = []
    for kind in sinks:
        durable: Synchronized[int] = spawn.Value("q", 0)  # type: ignore[assignment]
        receive, send = spawn.Pipe(duplex=False)
        process = spawn.Process(
            target=consumer_process, args=(kind, endpoint, stop, durable, send), daemon=True
        )
        process.start()
        consumers.append((kind, process, durable, receive))
    time.sleep(3)  # workers take their leases on an empty stream
    port = _free_port("127.0.0.1")
    logs = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    exchange = start_service(
        ["exchange", "--port", str(port), "--symbols", str(symbols), "--rate", str(rate)],
        {"LOG_LEVEL": "WARNING"},
        logs / "exchange.log",
    )
    producer = start_service(
        ["producer"],
        {
            "AWS_ENDPOINT_URL": endpoint,
            "BINANCE_STREAM_URL": f"ws://127.0.0.1:{port}/",
            "BINANCE_STREAMS": "!miniTicker@arr",
            "METRICS_PORT": "-1",
        },
        logs / "producer.log",
    )
    started = time.time()
    time.sleep(warmup + duration)
    window = (started + warmup, time.time())
    stop_service(exchange)
    stop_service(producer)
    summary = (logs / "producer.log").read_text()
    found = re.search(r"(\d+) records put to Kinesis", summary)
    produced = int(found.group(1)) if found else 0
    deadline = time.time() + drain
    while time.time() < deadline and any(d.value < produced for _, _, d, _ in consumers):
        time.sleep(0.25)
    stop.set()
    results = []
    for kind, process, _, receive in consumers:
        samples, counters = receive.recv()
        process.join(timeout=60)
        received = [(at - seconds, seconds) for at, seconds in samples]
        inside = [seconds for at, seconds in received if window[0] <= at < window[1]]
        results.append(SinkResult(kind, 0, inside, counters))
    put_in_window = _put_in_window(endpoint, window)
    skipped = sum(
        int(n) for n in re.findall(r"skipping (\d+) ticks", (logs / "exchange.log").read_text())
    )
    shutil.rmtree(logs)  # kept only when the run failed
    return RunResult(
        symbols,
        rate,
        window[1] - window[0],
        produced,
        [SinkResult(r.sink, put_in_window, r.latencies, r.counters) for r in results],
        skipped,
    )


def _put_in_window(endpoint: str, window: tuple[float, float]) -> int:
    """User records in the stream whose ``received_at`` lies in the window."""
    from tests.kinesis_reading import read_stream

    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    try:
        shards = read_stream(clients.kinesis, settings.kinesis_stream_name)
    finally:
        clients.close()
    low, high = window[0] * 1e6, window[1] * 1e6
    return sum(1 for rows in shards.values() for r in rows if low <= r.record["received_at"] < high)


def print_run(run: RunResult, s3_target: float) -> None:
    print(
        f"\n{run.symbols:,} symbols x {run.rate:g} Hz, {run.seconds:.0f} s measured, "
        f"{run.produced:,} records put in all; exchange ticks skipped: {run.ticks_skipped}"
    )
    print(
        f"{'sink':<10}{'in window':>10}{'durable':>9}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"
        f"{'max s':>8}{'target':>9}  met"
    )
    for sink in run.sinks:
        target = DYNAMODB_TARGET_P99 if sink.sink == "dynamodb" else s3_target
        done = len(sink.latencies)
        p99 = sink.percentile(0.99)
        met = "yes" if done >= sink.put and p99 < target else "NO"
        print(
            f"{sink.sink:<10}{sink.put:>10,}{done / max(1, sink.put):>8.0%} "
            f"{sink.percentile(0.5):>7.2f} {sink.percentile(0.95):>7.2f} {p99:>7.2f} "
            f"{max(sink.latencies, default=float('nan')):>7.2f} {'< ' + format(target, 'g'):>8}"
            f"  {met}"
        )
        if sink.sink == "dynamodb":
            requests = sink.counters.get(Counters.DYNAMODB_REQUESTS, 0.0)
            updates = sink.counters.get(Counters.LATEST_UPDATES, 0.0)
            stale = sink.counters.get(Counters.LATEST_STALE_SKIPPED, 0.0)
            print(
                f"{'':<10}DynamoDB: {requests:,.0f} requests ({updates + stale:,.0f} latest-table "
                f"UpdateItem), {requests / max(1e-9, run.seconds):,.0f} requests/s"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1.0, help="ticks per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=30.0, help="wait for the sinks after")
    parser.add_argument(
        "--sweep",
        default="100,50,25",
        help="symbol counts for the DynamoDB-only runs ('' to skip)",
    )
    parser.add_argument("--sweep-duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    settings = load_settings()
    s3_target = settings.max_batch_timeout + 2.0
    print(f"machine: {machine()}")
    print(
        "default settings: 2 shards, RECORD_MAX_BUFFERED_TIME_MS "
        f"{settings.record_max_buffered_time_ms}, IDLE_TIME_BETWEEN_READS_MS "
        f"{settings.idle_time_between_reads_ms}, MAX_BATCH_TIMEOUT {settings.max_batch_timeout} s, "
        f"MAX_BATCH_SIZE {settings.max_batch_size}, BATCH_GRACE_MS {settings.batch_grace_ms}"
    )
    with moto_server() as endpoint:
        run = run_pipeline(
            endpoint,
            symbols=args.symbols,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            drain=args.drain,
            sinks=SINKS,
        )
        print_run(run, s3_target)
        sweep = [int(n) for n in args.sweep.split(",") if n.strip()]
        if sweep:
            print(f"\nDynamoDB consumer alone (what moto sustains), {args.sweep_duration:g} s each")
        for symbols in sweep:
            print_run(
                run_pipeline(
                    endpoint,
                    symbols=symbols,
                    rate=args.rate,
                    duration=args.sweep_duration,
                    warmup=args.warmup,
                    drain=args.drain,
                    sinks=("dynamodb",),
                ),
                s3_target,
            )


if __name__ == "__main__":
    main()
