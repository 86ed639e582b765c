"""Shared benchmark plumbing: a moto server in its own process, the simulated market's frames
and records, one measured run, CPU time, the machine description and the --quick flag."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crypto_live.embedded import DUMMY_CREDENTIALS, MotoServer, reset_moto
from crypto_live.exchange.price_walk import MarketSimulator, MiniTickerPayload
from schemas.record import MiniTicker

# The simulated market every benchmark reads: 200 symbols, one tick per simulated second.
SYMBOLS = 200
SEED = 7
START_MS = 1_795_000_000_000


def machine() -> str:
    """One line: CPU model, cores, memory, Python."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    return f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def load_average() -> str:
    """The 1-minute load average, for notes on runs that share the machine."""
    with contextlib.suppress(OSError):
        return f"{os.getloadavg()[0]:.1f}"
    return "unknown"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process so far (Linux /proc), every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class MotoProcess:
    """A running moto server: where it answers, and its process (to read its CPU time)."""

    endpoint: str
    pid: int

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)


@contextlib.contextmanager
def moto_process() -> Iterator[MotoProcess]:
    """The embedded AWS (moto's stock standalone server) in a separate process."""
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with MotoServer() as moto:
        yield MotoProcess(moto.endpoint, moto.pid)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """:func:`moto_process`, when only the endpoint is needed."""
    with moto_process() as moto:
        yield moto.endpoint


def market_ticks(symbols: int = SYMBOLS) -> Iterator[tuple[int, list[MiniTickerPayload]]]:
    """(now in ms, one miniTicker payload per symbol) for each simulated second, endlessly."""
    market = MarketSimulator(symbols, seed=SEED)
    now = START_MS
    while True:
        now += 1000
        yield now, market.tick(now)


def frame(payload: MiniTickerPayload) -> str:
    """A combined-stream frame of one symbol, as Binance sends it."""
    stream = f"{payload['s'].lower()}@miniTicker"
    return json.dumps({"stream": stream, "data": payload}, separators=(",", ":"))


def frames(count: int) -> list[str]:
    """``count`` one-symbol combined-stream frames from the simulated market."""
    out: list[str] = []
    for _, payloads in market_ticks():
        out.extend(frame(payload) for payload in payloads)
        if len(out) >= count:
            return out[:count]
    raise AssertionError("unreachable: the market ticks forever")


def market_records(count: int, received_at_us: int | None = None) -> list[MiniTicker]:
    """``count`` validated records from the simulated market, every symbol once per second.

    ``received_at_us`` is every record's receive time; by default the tick's own time.
    """
    from producer.validation import validate_message

    out: list[MiniTicker] = []
    for now, payloads in market_ticks():
        received = now * 1000 if received_at_us is None else received_at_us
        for payload in payloads:
            records, rejected = validate_message(json.loads(frame(payload)), received)
            assert not rejected, rejected
            out.extend(records)
        if len(out) >= count:
            return out[:count]
    raise AssertionError("unreachable: the market ticks forever")


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run: what ran, on how many records, how long; a sink's benchmark adds
    its own counters in a subclass. ``cpu_seconds``, when measured, is this (the bench)
    process's CPU time over the run, every thread, never the moto server's; that one is
    ``moto_cpu_seconds``."""

    name: str
    records: int
    seconds: float
    cpu_seconds: float | None = field(default=None, kw_only=True)
    moto_cpu_seconds: float | None = field(default=None, kw_only=True)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_cores(self) -> float | None:
        """Cores this process kept busy on average (CPU seconds per wall second)."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.seconds

    @property
    def moto_cores(self) -> float | None:
        """Cores the moto server kept busy on average over the run."""
        return None if self.moto_cpu_seconds is None else self.moto_cpu_seconds / self.seconds

    @property
    def records_per_cpu_s(self) -> float | None:
        """Records per CPU-second of this process: records/s per core of the measured side."""
        return None if not self.cpu_seconds else self.records / self.cpu_seconds


def per_core_text(run: Run) -> str:
    """'4,100 records/s per core (consumer CPU only: 0.48 cores; moto 0.97 cores)'."""
    if run.records_per_cpu_s is None or run.cpu_cores is None:
        return "consumer CPU not measured"
    moto = "" if run.moto_cores is None else f"; moto's process {run.moto_cores:.2f} cores"
    return (
        f"{run.records_per_cpu_s:,.0f} records/s per core "
        f"(consumer CPU only: {run.cpu_cores:.2f} cores{moto})"
    )


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the module's first docstring line, with ``--quick``:
    small sizes for a smoke run, whose results are printed but not saved for the README."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run on small sizes; results are printed, not saved for the README",
    )
    return parser


def save_results(quick: bool, name: str, rows: Sequence[tuple[str, str]], note: str = "") -> None:
    """Save the README rows (bench.report.save), unless this was a --quick run."""
    print("\nREADME rows:")
    for label, result in rows:
        print(f"| {label} | {result} |")
    if note:
        print(note)
    if quick:
        print("\nquick run: results not saved")
        return
    from bench.report import save

    save(name, rows, note)


def publish(settings: Any, clients: Any, records: Iterable[Mapping[str, Any]]) -> None:
    """Put records into the stream the way the producer does (Avro, KPL aggregation)."""
    from producer.kinesis import KinesisStreamWriter
    from producer.publisher import publish_records

    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    asyncio.run(publish_records(writer, records))


def reset_account(endpoint: str) -> None:
    """Empty the embedded AWS (moto's reset API), so rows do not see each other's data."""
    reset_moto(endpoint)
