"""End-to-end latency: simulated exchange -> producer -> Kinesis -> DynamoDB and S3 consumers.

Every service is its own process with default settings, on the embedded AWS (moto's server,
one more process): the exchange ticks SYMBOLS symbols at RATE Hz into the all-market stream,
and each consumer records, per record, the seconds from the producer's ``received_at`` to the
sink's confirmed write and checkpoint (what ``crypto_live_end_to_end_seconds`` observes).

Two sets of runs, each saved as its own results file:

- ``embedded`` (bench/results/latency_embedded.json): the embedded default at 200 symbols x
  1 Hz, both consumers at once on the one moto server, against the targets (history p99
  <= 1.0 s, latest row <= 1.5 s, S3 <= MAX_BATCH_TIMEOUT + 1 s), with what each figure is made
  of: the producer's leg (receipt to Kinesis arrival) and the sinks' request times.
- ``saturated`` (bench/results/latency.json): the full 2,000 symbols/s, each consumer alone and
  both at once, then a sweep of the DynamoDB consumer alone at fewer symbols, to find the rate
  moto can sustain.

Run `python -m bench.latency` from the repository root (`--help` for a quick run).
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import cast

from bench.common import (
    MotoProcess,
    load_average,
    machine,
    moto_process,
    reset_account,
    save_results,
)
from bench.report import Row
from core.aws import AwsClients
from core.metrics import Counters, Histograms, Metrics
from core.settings import load_settings
from crypto_live.embedded import DUMMY_CREDENTIALS, free_port
from crypto_live.provision import provision

SINKS = ("dynamodb", "s3")
# Issue 16's p99 targets on the embedded default; S3's is MAX_BATCH_TIMEOUT plus this.
HISTORY_TARGET_P99 = 1.0
LATEST_TARGET_P99 = 1.5
S3_TARGET_SLACK = 1.0
NEAR_PEAK = 0.9


# What each sample measures, from the producer's received_at: checkpointed (the record durable
# everywhere the sink writes it, and its position committed), its history item durable, and
# the latest-ticker row carrying it written (DynamoDB only).
MEASURES = {
    Histograms.END_TO_END_SECONDS: "checkpointed",
    Histograms.HISTORY_DURABLE_SECONDS: "history item",
    Histograms.LATEST_AGE_SECONDS: "latest row",
}


# The sinks' request times, kept to show how much of a latency the write itself is.
REQUESTS = {
    Histograms.DYNAMODB_REQUEST_SECONDS: "DynamoDB request",
    Histograms.S3_PUT_SECONDS: "S3 PUT",
}


class LatencyRecorder(Metrics):
    """Metrics that also keep every latency and request-time observation as
    (observed at, seconds)."""

    def __init__(self, service: str, durable: Synchronized[int]) -> None:
        super().__init__(service)
        self.samples: dict[str, list[tuple[float, float]]] = {
            m: [] for m in (*MEASURES.values(), *REQUESTS.values())
        }
        self._durable = durable

    def observe(self, name: Histograms, value: float) -> None:
        super().observe(name, value)
        # Latencies are kept in observe_ages alone, whichever way Metrics records them.
        if name in REQUESTS:
            self.samples[REQUESTS[name]].append((time.time(), value))

    def observe_ages(self, name: Histograms, received_at_us: Iterable[int]) -> None:
        received = list(received_at_us)
        if name in MEASURES:
            now = time.time()
            self.samples[MEASURES[name]].extend((now, now - r / 1e6) for r in received)
        if name == Histograms.END_TO_END_SECONDS:
            with self._durable.get_lock():
                self._durable.value += len(received)
        super().observe_ages(name, received)


def consumer_process(
    kind: str,
    endpoint: str,
    stop: Event,
    durable: Synchronized[int],
    out: Connection,
) -> None:
    """One consumer worker (default settings) until ``stop``; sends samples and counters."""
    from consumers.app import ConsumerKind, run_consumer
    from core.heap import freeze_startup_heap

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
        # As `crypto-live consume` runs it.
        group = cast(ConsumerKind, kind)
        await run_consumer(settings, group, stopping, metrics, on_built=freeze_startup_heap)

    asyncio.run(main())
    out.send((metrics.samples, metrics.snapshot()))


@dataclass(frozen=True, slots=True)
class SinkResult:
    """One sink's latencies for the records received inside the measured window."""

    sink: str
    put: int  # records the producer put inside the window
    # per measure, seconds for the records received in the window that got there before the
    # drain ended
    latencies: dict[str, list[float]]
    counters: dict[str, float]
    # per request kind (REQUESTS), seconds of the sink's requests started in the window
    requests: dict[str, list[float]] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return len(self.latencies["checkpointed"])

    def percentile(self, q: float, measure: str = "checkpointed") -> float:
        return percentile(self.latencies[measure], q)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True, slots=True)
class RunResult:
    symbols: int
    rate: float
    seconds: float
    produced: int  # records put by the producer in the whole run
    sinks: list[SinkResult]
    ticks_skipped: int
    moto_cores: float  # moto's process CPU over the measured window
    # per record received in the window: seconds from receipt to its Kinesis arrival
    # (the producer's buffering and PutRecords), from ApproximateArrivalTimestamp
    kinesis_lags: list[float] = field(default_factory=list)


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
    moto: MotoProcess,
    *,
    symbols: int,
    rate: float,
    duration: float,
    warmup: float,
    drain: float,
    sinks: Sequence[str],
    tail: float = 0.0,
) -> RunResult:
    """Run exchange, producer and the ``sinks`` consumers; measure records received in the
    window [warmup, warmup + duration] after the producer started. The exchange keeps ticking
    ``tail`` seconds past the window, so the S3 batch windows holding measured records close
    on later records, as they do in steady state, not at the tip once the ticks stop."""
    endpoint = moto.endpoint
    reset_account(endpoint)
    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    provision(settings, clients)
    clients.close()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    consumers = []
    for kind in sinks:
        durable: Synchronized[int] = spawn.Value("q", 0)
        receive, send = spawn.Pipe(duplex=False)
        process = spawn.Process(
            target=consumer_process, args=(kind, endpoint, stop, durable, send), daemon=True
        )
        process.start()
        consumers.append((kind, process, durable, receive))
    time.sleep(3)  # workers take their leases on an empty stream
    port = free_port("127.0.0.1")
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
    time.sleep(warmup)
    moto_cpu = moto.cpu_seconds()
    time.sleep(duration)
    window = (started + warmup, time.time())
    moto_cores = (moto.cpu_seconds() - moto_cpu) / (window[1] - window[0])
    time.sleep(tail)
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
        inside = {
            measure: [sec for at, sec in observed if window[0] <= at - sec < window[1]]
            for measure, observed in samples.items()
        }
        latencies = {m: inside[m] for m in MEASURES.values()}
        requests = {m: inside[m] for m in REQUESTS.values() if inside[m]}
        results.append(SinkResult(kind, 0, latencies, counters, requests))
    kinesis_lags = _kinesis_lags(endpoint, window)
    skipped = sum(
        int(n) for n in re.findall(r"skipping (\d+) ticks", (logs / "exchange.log").read_text())
    )
    shutil.rmtree(logs)  # kept only when the run failed
    return RunResult(
        symbols,
        rate,
        window[1] - window[0],
        produced,
        [
            SinkResult(r.sink, len(kinesis_lags), r.latencies, r.counters, r.requests)
            for r in results
        ],
        skipped,
        moto_cores,
        kinesis_lags,
    )


def _kinesis_lags(endpoint: str, window: tuple[float, float]) -> list[float]:
    """Per user record in the stream whose ``received_at`` lies in the window: seconds from
    that receipt to the Kinesis record's ApproximateArrivalTimestamp."""
    from consumers.engine.deaggregation import deaggregate
    from schemas.codec import default_codec

    settings = load_settings(aws_endpoint_url=endpoint)
    clients = AwsClients(settings)
    codec = default_codec()
    low, high = window[0] * 1e6, window[1] * 1e6
    lags: list[float] = []
    try:
        kinesis, stream = clients.kinesis, settings.kinesis_stream_name
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                for raw in page["Records"]:
                    arrived_us = raw["ApproximateArrivalTimestamp"].timestamp() * 1e6
                    for user in deaggregate(raw):
                        received = codec.decode_typed(user.data)[1].get("received_at")
                        if received is not None and low <= received < high:
                            lags.append((arrived_us - received) / 1e6)
                if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                    break
                iterator = page.get("NextShardIterator")
    finally:
        clients.close()
    return lags


def print_run(run: RunResult, s3_target: float) -> None:
    print(
        f"\n{run.symbols:,} symbols x {run.rate:g} Hz, {run.seconds:.0f} s measured, "
        f"{run.produced:,} records put in all; exchange ticks skipped: {run.ticks_skipped}; "
        f"moto's process {run.moto_cores:.2f} cores"
    )
    print(
        f"{'sink':<10}{'measure':<18}{'in window':>10}{'reached':>9}{'p50 s':>8}{'p95 s':>8}"
        f"{'p99 s':>8}{'max s':>8}{'target':>9}  met"
    )
    for sink in run.sinks:
        for measure, seconds in sink.latencies.items():
            if not seconds and measure != "checkpointed":
                continue  # the S3 sink has no history table or latest rows
            target = _target(sink.sink, measure, s3_target)
            print(
                f"{sink.sink:<10}{measure:<18}{sink.put:>10,}"
                f"{len(seconds) / max(1, sink.put):>8.0%} "
                f"{sink.percentile(0.5, measure):>7.2f} {sink.percentile(0.95, measure):>7.2f} "
                f"{sink.percentile(0.99, measure):>7.2f} {max(seconds, default=float('nan')):>7.2f}"
                f" {'<= ' + format(target, 'g') if target else '':>8}  "
                f"{_met(sink, measure, target)}"
            )
        for request, seconds in sink.requests.items():
            print(
                f"{sink.sink:<10}{request:<18}{len(seconds):>10,}{'':>9} "
                f"{percentile(seconds, 0.5):>7.3f} {percentile(seconds, 0.95):>7.3f} "
                f"{percentile(seconds, 0.99):>7.3f} {max(seconds, default=float('nan')):>7.3f}"
            )
        if sink.sink == "dynamodb":
            requests = sink.counters.get(Counters.DYNAMODB_REQUESTS, 0.0)
            updates = sink.counters.get(Counters.LATEST_UPDATES, 0.0)
            stale = sink.counters.get(Counters.LATEST_STALE_SKIPPED, 0.0)
            coalesced = sink.counters.get(Counters.LATEST_COALESCED, 0.0)
            print(
                f"{'':<10}DynamoDB: {requests:,.0f} requests, "
                f"{requests / max(1, run.produced):.2f} per record put; "
                f"{updates + stale:,.0f} latest-row PutItem, {coalesced:,.0f} latest updates "
                "coalesced while waiting"
            )
    lags = run.kinesis_lags
    print(
        f"{'producer':<10}{'to Kinesis':<18}{len(lags):>10,}{'':>9} "
        f"{percentile(lags, 0.5):>7.3f} {percentile(lags, 0.95):>7.3f} "
        f"{percentile(lags, 0.99):>7.3f} {max(lags, default=float('nan')):>7.3f}"
    )


def _target(sink: str, measure: str, s3_target: float) -> float | None:
    if sink == "s3":
        return s3_target
    return {"history item": HISTORY_TARGET_P99, "latest row": LATEST_TARGET_P99}.get(measure)


def _met(sink: SinkResult, measure: str, target: float | None) -> str:
    if target is None:
        return ""
    return "yes" if sink.done >= sink.put and sink.percentile(0.99, measure) <= target else "NO"


def _percentiles(values: Sequence[float], digits: int = 2) -> str:
    p50, p95, p99 = (percentile(values, q) for q in (0.5, 0.95, 0.99))
    return f"p50 {p50:.{digits}f} s, p95 {p95:.{digits}f} s, **p99 {p99:.{digits}f} s**"


def _against(sink: SinkResult, measure: str, target: float | None) -> str:
    """'p50 .., p95 .., **p99 ..** (target <= 1 s: yes)'."""
    shown = _percentiles(sink.latencies[measure])
    return (
        shown
        if target is None
        else f"{shown} (target <= {target:g} s: {_met(sink, measure, target)})"
    )


def readme_rows(
    alone: Sequence[RunResult],
    together: RunResult | None,
    sweep: Sequence[RunResult],
    s3_target: float,
) -> list[Row]:
    """The saturated runs' README rows: each sink alone at full rate per measure, both sinks
    sharing the one emulator, then the DynamoDB sweep."""
    rows: list[Row] = []
    for run in alone:
        (sink,) = run.sinks
        label = (
            f"{sink.sink} consumer alone, {run.symbols:,} symbols x {run.rate:g} Hz, "
            f"{run.seconds:.0f} s, defaults, moto {run.moto_cores:.2f} cores"
        )
        reached = f"{sink.done / max(1, sink.put):.0%} of {sink.put:,} records"
        if sink.sink == "s3":
            rows.append(
                (
                    f"end-to-end latency to S3 (object written, checkpointed), {label}",
                    f"{_against(sink, 'checkpointed', s3_target)}, {reached}",
                )
            )
            continue
        rows += [
            (
                f"end-to-end latency to the DynamoDB history table, {label}",
                _against(sink, "history item", HISTORY_TARGET_P99),
            ),
            (
                f"end-to-end latency to DynamoDB checkpointed (history + latest rows), {label}",
                f"{_against(sink, 'checkpointed', None)}, {reached}",
            ),
            (
                f"age of a latest-ticker row when written, {label}",
                f"{_against(sink, 'latest row', LATEST_TARGET_P99)}; {_rows_written(sink, run)}",
            ),
        ]
    if together is not None:
        by_sink = {sink.sink: sink for sink in together.sinks}
        dynamodb, s3 = by_sink["dynamodb"], by_sink["s3"]
        rows.append(
            (
                f"both consumers on the one embedded AWS, {together.symbols:,} symbols x "
                f"{together.rate:g} Hz, {together.seconds:.0f} s, moto {together.moto_cores:.2f}"
                " cores",
                f"DynamoDB history p99 {dynamodb.percentile(0.99, 'history item'):.2f} s, "
                f"checkpointed p99 {dynamodb.percentile(0.99):.2f} s; "
                f"S3 p99 {s3.percentile(0.99):.2f} s",
            )
        )
    for run in sweep:
        (sink,) = run.sinks
        rows.append(
            (
                f"DynamoDB consumer alone, {run.symbols:,} symbols x {run.rate:g} Hz, "
                f"{run.seconds:.0f} s, moto {run.moto_cores:.2f} cores",
                f"history p99 {sink.percentile(0.99, 'history item'):.2f} s, checkpointed "
                f"p99 {sink.percentile(0.99):.2f} s, latest row p99 "
                f"{sink.percentile(0.99, 'latest row'):.2f} s",
            )
        )
    return rows


def _rows_written(sink: SinkResult, run: RunResult) -> str:
    """'11,225 rows written for 12,400 records put (91%), 1,175 coalesced while waiting': the
    counters cover the whole run, warm-up and tail included."""
    updates = sink.counters.get(Counters.LATEST_UPDATES, 0.0)
    coalesced = sink.counters.get(Counters.LATEST_COALESCED, 0.0)
    return (
        f"{updates:,.0f} rows written for {run.produced:,} records put "
        f"({updates / max(1, run.produced):.0%}), {coalesced:,.0f} coalesced while waiting"
    )


def embedded_rows(run: RunResult, s3_target: float, load: str) -> list[Row]:
    """The embedded default's README rows: each target, then what the figures are made of."""
    by_sink = {sink.sink: sink for sink in run.sinks}
    dynamodb, s3 = by_sink["dynamodb"], by_sink["s3"]
    label = (
        f"embedded default, {run.symbols:,} symbols x {run.rate:g} Hz, producer and both "
        f"consumers on one moto server, {run.seconds:.0f} s (moto {run.moto_cores:.2f} cores, "
        f"load average {load})"
    )

    def reached(sink: SinkResult) -> str:
        return f"{sink.done / max(1, sink.put):.0%} of {sink.put:,} records checkpointed"

    def request_times(sink: SinkResult) -> str:
        return "; ".join(
            f"{name} p50 {percentile(seconds, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(seconds, 0.99) * 1000:.0f} ms ({len(seconds):,} requests)"
            for name, seconds in sink.requests.items()
        )

    return [
        (
            f"receipt to DynamoDB history item durable, {label}",
            f"{_against(dynamodb, 'history item', HISTORY_TARGET_P99)}, {reached(dynamodb)}",
        ),
        (
            f"receipt to latest-ticker row written, {label}",
            f"{_against(dynamodb, 'latest row', LATEST_TARGET_P99)}; "
            f"{_rows_written(dynamodb, run)}",
        ),
        (
            f"receipt to S3 object written, {label}",
            f"{_against(s3, 'checkpointed', s3_target)}, {reached(s3)}",
        ),
        (
            f"receipt to DynamoDB checkpointed (history and latest rows), {label}",
            _against(dynamodb, "checkpointed", None),
        ),
        (
            f"what the figures are made of, {label}",
            f"producer receipt to Kinesis arrival {_percentiles(run.kinesis_lags, 3)}; "
            f"{request_times(dynamodb)}; {request_times(s3)}",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        choices=("all", "embedded", "saturated"),
        default="all",
        help="which set of runs (each saves its own results file)",
    )
    parser.add_argument("--symbols", type=int, default=2000, help="symbols of the saturated runs")
    parser.add_argument("--rate", type=float, default=1.0, help="ticks per second")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--embedded-symbols", type=int, default=200)
    parser.add_argument("--embedded-duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=30.0, help="wait for the sinks after")
    parser.add_argument(
        "--sweep",
        default="1000,500,200",
        help="symbol counts for the DynamoDB-only runs ('' to skip)",
    )
    parser.add_argument("--sweep-duration", type=float, default=20.0)
    parser.add_argument(
        "--together-duration",
        type=float,
        default=30.0,
        help="seconds of the run with both consumers at once (0 to skip)",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, not saved")
    args = parser.parse_args(argv)
    if args.quick:
        args.symbols, args.duration, args.sweep, args.together_duration = 200, 10.0, "", 5.0
        args.embedded_duration = 15.0
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    settings = load_settings()
    s3_target = settings.max_batch_timeout + S3_TARGET_SLACK
    s3_tail = settings.max_batch_timeout + settings.batch_grace_ms / 1000 + 1.0
    print(f"machine: {machine()}, load average {load_average()} (shared with other work)")
    print(
        "default settings: 2 shards, RECORD_MAX_BUFFERED_TIME_MS "
        f"{settings.record_max_buffered_time_ms}, IDLE_TIME_BETWEEN_READS_MS "
        f"{settings.idle_time_between_reads_ms}, MAX_BATCH_TIMEOUT {settings.max_batch_timeout} s, "
        f"MAX_BATCH_SIZE {settings.max_batch_size}, BATCH_GRACE_MS {settings.batch_grace_ms}, "
        f"DYNAMODB_MAX_IN_FLIGHT {settings.dynamodb_max_in_flight}"
    )
    with moto_process() as moto:

        def run(symbols: int, duration: float, sinks: Sequence[str]) -> RunResult:
            result = run_pipeline(
                moto,
                symbols=symbols,
                rate=args.rate,
                duration=duration,
                warmup=args.warmup,
                drain=args.drain,
                sinks=sinks,
                # past the last measured record's S3 window (and its grace)
                tail=s3_tail if "s3" in sinks else 0.0,
            )
            print_run(result, s3_target)
            return result

        if args.runs in ("all", "embedded"):
            # The services `crypto-live up` starts (as processes here): both consumers, one moto.
            print(f"\nembedded default: {args.embedded_symbols:,} symbols, both consumers")
            load = load_average()
            embedded = run(args.embedded_symbols, args.embedded_duration, SINKS)
            save_results(args.quick, "latency_embedded", embedded_rows(embedded, s3_target, load))
        if args.runs in ("all", "saturated"):
            # Each consumer alone with the exchange and producer, as each would meet its own
            # AWS service; then both sharing the one emulator process (and these two cores).
            print("\neach consumer alone")
            alone = [run(args.symbols, args.duration, (sink,)) for sink in SINKS]
            together = None
            if args.together_duration > 0:
                print("\nboth consumers at once")
                together = run(args.symbols, args.together_duration, SINKS)
            sweep_symbols = [int(n) for n in args.sweep.split(",") if n.strip()]
            if sweep_symbols:
                print(f"\nDynamoDB consumer alone, {args.sweep_duration:g} s each")
            sweep = [run(n, args.sweep_duration, ("dynamodb",)) for n in sweep_symbols]
            runs = [*alone, *([together] if together else []), *sweep]
            save_results(
                args.quick,
                "latency",
                readme_rows(alone, together, sweep, s3_target),
                latency_note(runs),
            )


def latency_note(runs: Sequence[RunResult]) -> str:
    """Which latency runs the emulator bounded: moto is one Python process, so its busiest
    run shows its ceiling, and runs near that ceiling were waiting on it."""
    peak = max(r.moto_cores for r in runs)
    bound = [r for r in runs if r.moto_cores >= NEAR_PEAK * peak]
    shown = ", ".join(
        f"{'+'.join(s.sink for s in r.sinks)} at {r.symbols:,} symbols ({r.moto_cores:.2f})"
        for r in bound
    )
    return (
        "Latency: every service and moto share these cores; moto serves all AWS calls from one "
        "Python process (its CPU per DynamoDB call is in the table above). Its busiest run used "
        f"{peak:.2f} cores; the runs within {1 - NEAR_PEAK:.0%} of that were bound by the "
        f"emulator: {shown}."
    )


if __name__ == "__main__":
    main()
