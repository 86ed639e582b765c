"""Memory soak: RSS of the producer and both consumers over a burst and a long steady run.

Every service is its own process with default settings, on the embedded AWS (moto's server,
one more process). The simulated exchange first sends a burst of BURST miniTicker records (its
all-market stream ``!miniTicker@arr`` at BURST_RATE_HZ ticks per second), then is restarted at
the simulated all-market rate (SYMBOLS symbols x 1 Hz) for the soak. Each process's resident
set size (psutil when installed, else /proc/PID/status VmRSS) is sampled throughout and
printed over time; after the warm-up (the soak's first WARMUP seconds: the burst's backlog and
the services' caches and pools settle there) each must stay within FLAT of its RSS at the end
of the warm-up. Run `python -m bench.soak` from the repository root (`--help` for a quick run).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import bench_parser, load_average, machine, moto_process, save_results
from bench.latency import start_service, stop_service
from bench.report import Row
from core.aws import AwsClients
from core.settings import load_settings
from crypto_live.embedded import free_port
from crypto_live.provision import provision

SYMBOLS = 2000
BURST = 100_000
BURST_RATE_HZ = 10.0
BURST_TIMEOUT_SECONDS = 180.0
FLAT = 0.10
SERVICES = ("producer", "consumer-dynamodb", "consumer-s3")
LABELS = {
    "producer": "producer",
    "consumer-dynamodb": "DynamoDB consumer",
    "consumer-s3": "S3 consumer",
}
# Counters scraped from the services' /metrics for context (progress, lag): column -> (service,
# counter). The burst is counted in records the producer received (validated).
PROGRESS = {
    "received": ("producer", "crypto_live_records_valid_total"),
    "put": ("producer", "crypto_live_records_put_total"),
    "dynamodb": ("consumer-dynamodb", "crypto_live_records_consumed_total"),
    "s3": ("consumer-s3", "crypto_live_records_consumed_total"),
}


def rss_bytes(pid: int) -> int:
    """Resident set size of a process: psutil when installed, else /proc/PID/status."""
    try:
        import psutil  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if found is None:
            raise ProcessLookupError(f"no VmRSS for process {pid}") from None
        return int(found.group(1)) * 1024
    return int(psutil.Process(pid).memory_info().rss)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampling instant: seconds since the services started, RSS and progress per name."""

    at: float
    rss: Mapping[str, int]
    progress: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Flatness:
    """One process's RSS judged over the soak: the baseline is its RSS at the end of the
    warm-up; flat when every later sample lies within ``limit`` of it; ``grew`` when one lies
    above it by more (a drop is memory the burst took being given back, not a leak)."""

    start: int  # first sample of the run
    peak_before: int  # highest sample up to the end of the warm-up (the burst included)
    baseline: int
    low: int  # lowest and highest samples after the warm-up
    high: int
    end: int
    limit: float

    @property
    def below(self) -> float:
        return self.low / self.baseline - 1

    @property
    def above(self) -> float:
        return self.high / self.baseline - 1

    @property
    def flat(self) -> bool:
        return max(-self.below, self.above) <= self.limit

    @property
    def grew(self) -> bool:
        return self.above > self.limit


def flatness(series: Sequence[tuple[float, int]], warmup_end: float, limit: float) -> Flatness:
    """Judge one process's (seconds, RSS) series: the baseline is the last sample at or before
    ``warmup_end``, the samples after it must stay within ``limit`` (a fraction) of it."""
    if not series:
        raise ValueError("no RSS samples")
    before = [rss for at, rss in series if at <= warmup_end] or [series[0][1]]
    after = [rss for at, rss in series if at > warmup_end] or [before[-1]]
    return Flatness(
        start=series[0][1],
        peak_before=max(before),
        baseline=before[-1],
        low=min(after),
        high=max(after),
        end=series[-1][1],
        limit=limit,
    )


def parse_counter(text: str, name: str) -> float:
    """The sum of the samples of ``name`` (any labels) in Prometheus text; 0 when absent."""
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def scrape(port: int, name: str) -> float:
    """One counter from a service's /metrics; NaN while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return parse_counter(answer.read().decode(), name)
    except OSError:
        return float("nan")


@dataclass(frozen=True, slots=True)
class SoakResult:
    samples: list[Sample]
    burst_seconds: float  # from the services' start to the burst's last record received
    warmup_end: float  # seconds since the start
    end: float
    moto_cores: float
    load: str

    def series(self, name: str) -> list[tuple[float, int]]:
        return [(s.at, s.rss[name]) for s in self.samples if name in s.rss]


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def run_soak(
    *,
    seconds: float,
    warmup: float,
    burst: int,
    sample_every: float,
    print_every: float,
    names: Sequence[str] = SERVICES,
) -> SoakResult:
    """Start the services, burst, soak for ``seconds``; RSS sampled every ``sample_every``."""
    with moto_process() as moto:
        settings = load_settings(aws_endpoint_url=moto.endpoint)
        clients = AwsClients(settings)
        provision(settings, clients)
        clients.close()
        logs = Path(tempfile.mkdtemp(prefix="bench-soak-"))
        exchange_port = free_port("127.0.0.1")
        ports = {name: free_port("127.0.0.1") for name in names}
        common = {"AWS_ENDPOINT_URL": moto.endpoint, "LOG_LEVEL": "WARNING"}
        services = {
            "consumer-dynamodb": ["consume", "dynamodb"],
            "consumer-s3": ["consume", "s3"],
            "producer": ["producer"],
        }
        extra = {
            "producer": {
                "BINANCE_STREAM_URL": f"ws://127.0.0.1:{exchange_port}/",
                "BINANCE_STREAMS": "!miniTicker@arr",
            }
        }

        def exchange(rate: float) -> Callable[[], None]:
            process = start_service(
                [
                    "exchange",
                    *("--port", str(exchange_port), "--symbols", str(SYMBOLS)),
                    *("--rate", str(rate)),
                ],
                {"LOG_LEVEL": "WARNING"},
                logs / f"exchange-{rate:g}.log",
            )
            return lambda: stop_service(process)

        stop_exchange = exchange(BURST_RATE_HZ)
        processes = {
            name: start_service(
                services[name],
                {**common, **extra.get(name, {}), "METRICS_PORT": str(ports[name])},
                logs / f"{name}.log",
            )
            for name in names
        }
        started = time.monotonic()
        samples: list[Sample] = []
        printed = -print_every

        def sample() -> Sample:
            rss: dict[str, int] = {}
            for name, process in processes.items():
                with contextlib.suppress(OSError, ProcessLookupError):
                    rss[name] = rss_bytes(process.pid)
            with contextlib.suppress(OSError, ProcessLookupError):
                rss["moto"] = rss_bytes(moto.pid)
            progress = {
                column: scrape(ports[service], counter)
                for column, (service, counter) in PROGRESS.items()
                if service in ports
            }
            taken = Sample(time.monotonic() - started, rss, progress)
            samples.append(taken)
            return taken

        def show(taken: Sample, phase: str) -> None:
            nonlocal printed
            if taken.at - printed < print_every:
                return
            printed = taken.at
            cells = "".join(f"{mib(taken.rss.get(n, 0)):>20}" for n in (*names, "moto"))
            counts = " / ".join(f"{taken.progress.get(c, float('nan')):,.0f}" for c in PROGRESS)
            print(f"{taken.at:>7.0f} s {phase:<8}{cells}   {counts}")

        print(
            f"{'':>9} {'phase':<8}"
            + "".join(f"{n:>20}" for n in (*names, "moto"))
            + "   records received / put / consumed by dynamodb / by s3"
        )
        moto_cpu = moto.cpu_seconds()
        try:
            while True:  # the burst: until the producer has received `burst` records
                taken = sample()
                show(taken, "burst")
                if taken.progress.get("received", 0.0) >= burst:
                    break
                if taken.at > BURST_TIMEOUT_SECONDS:
                    raise SystemExit(
                        f"the producer received {taken.progress.get('received'):,.0f} of "
                        f"{burst:,} burst records in {BURST_TIMEOUT_SECONDS:g} s (logs in {logs})"
                    )
                time.sleep(0.2)
            burst_seconds = time.monotonic() - started
            stop_exchange()
            stop_exchange = exchange(1.0)
            soak_end = burst_seconds + seconds
            while (taken := sample()).at < soak_end:
                show(taken, "soak" if taken.at > burst_seconds + warmup else "warm-up")
                time.sleep(max(0.0, min(sample_every, soak_end - taken.at)))
            show(taken, "end")
        finally:
            moto_cores = (moto.cpu_seconds() - moto_cpu) / (time.monotonic() - started)
            stop_exchange()
            for name in ("producer", "consumer-dynamodb", "consumer-s3"):
                if name in processes:
                    stop_service(processes[name])
        for name, process in processes.items():
            if process.returncode not in (0, None):
                print(f"{name} exited {process.returncode}; log: {logs / f'{name}.log'}")
    return SoakResult(
        samples, burst_seconds, burst_seconds + warmup, samples[-1].at, moto_cores, load_average()
    )


def print_verdicts(result: SoakResult, names: Sequence[str] = SERVICES) -> None:
    print(
        f"\nburst {result.burst_seconds:.0f} s, warm-up until {result.warmup_end:.0f} s, "
        f"end {result.end:.0f} s; moto {result.moto_cores:.2f} cores; load average {result.load}"
    )
    print(
        f"{'process':<20}{'start':>10}{'peak<=wu':>10}{'baseline':>10}{'low':>10}{'high':>10}"
        f"{'end':>10}{'range':>16}  flat"
    )
    for name in names:
        judged = flatness(result.series(name), result.warmup_end, FLAT)
        print(
            f"{name:<20}"
            + "".join(
                f"{mib(v):>10}"
                for v in (
                    judged.start,
                    judged.peak_before,
                    judged.baseline,
                    judged.low,
                    judged.high,
                    judged.end,
                )
            )
            + f"{judged.below:>+8.1%}/{judged.above:+.1%}  {'yes' if judged.flat else 'NO'}"
        )


def readme_rows(result: SoakResult, burst: int, seconds: float, warmup: float) -> list[Row]:
    """One row per process, then the run's context."""
    last = result.samples[-1].progress
    label = (
        f"{burst:,}-record burst, then {seconds:.0f} s at {SYMBOLS:,} symbols/s "
        f"(`!miniTicker@arr`), every service its own process on one moto server"
    )
    rows: list[Row] = []
    for name in SERVICES:
        judged = flatness(result.series(name), result.warmup_end, FLAT)
        rows.append(
            (
                f"RSS of the {LABELS[name]}, {label}",
                f"start {mib(judged.start)}, peak during burst and warm-up "
                f"{mib(judged.peak_before)}, {mib(judged.baseline)} after warm-up "
                f"(first {warmup:.0f} s of the soak), then {mib(judged.low)} to "
                f"{mib(judged.high)} ({judged.below:+.1%} / {judged.above:+.1%}), end "
                f"{mib(judged.end)}: **grew past +{FLAT:.0%}: "
                f"{'YES' if judged.grew else 'no'}**; flat within {FLAT:.0%}: "
                f"{'yes' if judged.flat else 'no, it fell back'}",
            )
        )
    rows.append(
        (
            f"soak run, {label}",
            f"burst received in {result.burst_seconds:.0f} s; at the end "
            f"{last.get('received', 0):,.0f} records received, {last.get('put', 0):,.0f} put, "
            f"{last.get('dynamodb', 0):,.0f} consumed by the DynamoDB consumer, "
            f"{last.get('s3', 0):,.0f} by the S3 consumer; moto {result.moto_cores:.2f} cores, "
            f"load average {result.load} at the end",
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="soak length after burst")
    parser.add_argument("--warmup", type=float, default=120.0, help="soak seconds not judged")
    parser.add_argument("--burst", type=int, default=BURST, help="records of the burst")
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--print-every", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.print_every = 60.0, 20.0, 10.0
    print(f"machine: {machine()}, load average {load_average()} (shared with other work)")
    result = run_soak(
        seconds=args.seconds,
        warmup=args.warmup,
        burst=args.burst,
        sample_every=args.sample_every,
        print_every=args.print_every,
    )
    print_verdicts(result)
    save_results(args.quick, "soak", readme_rows(result, args.burst, args.seconds, args.warmup))


if __name__ == "__main__":
    main()
