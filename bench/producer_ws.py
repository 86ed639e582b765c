"""Producer through the real websocket path: frames -> python-binance -> producer -> Kinesis.

A websocket server in this process (Binance's frames, no simulated market behind them) sends
a script of frames as fast as the producer reads them; the producer runs in its own process
with default settings and measures its own CPU time (time.process_time, every thread) from its
first message to its last confirmed put.
Aggregated and unaggregated run side by side, for the all-market array stream and for one
symbol per frame; from the bytes and Kinesis records per user record follows how many shards
the all-market stream needs at ~2,000 symbols/s. Run `python -m bench.producer_ws` (it saves
its README "Performance" rows; `--quick` for a smoke run that saves nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from websockets.asyncio.server import ServerConnection, serve

from bench.common import (
    bench_parser,
    load_average,
    machine,
    moto_server,
    reset_account,
    save_results,
)
from bench.common import frames as symbol_frames
from core.aws import AwsClients
from core.metrics import Counters, Metrics
from core.settings import load_settings
from crypto_live.embedded import DUMMY_CREDENTIALS
from crypto_live.exchange.price_walk import MarketSimulator
from crypto_live.provision import provision

SHARDS = 4
ALL_MARKET_SYMBOLS = 2_000
# Kinesis write limits per shard.
SHARD_BYTES_PER_S = 1024 * 1024
SHARD_RECORDS_PER_S = 1_000
RECORDS = 40_000
QUICK_RECORDS = 4_000


@dataclass(frozen=True, slots=True)
class Result:
    shape: str
    aggregated: bool
    records: int
    seconds: float
    cpu_seconds: float
    kinesis_records: float
    kinesis_bytes: float
    requests: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6

    def shards_for(self, user_records_per_s: float) -> tuple[int, str]:
        """Shards the write limits call for at this rate, and which limit binds."""
        by_bytes = user_records_per_s * self.kinesis_bytes / self.records / SHARD_BYTES_PER_S
        by_records = user_records_per_s * self.kinesis_records / self.records / SHARD_RECORDS_PER_S
        binding = "records/s" if by_records >= by_bytes else "bytes/s"
        return max(1, math.ceil(max(by_bytes, by_records))), binding


def all_market_frames(records: int) -> list[str]:
    """``!miniTicker@arr`` frames of 2,000 symbols each, one per simulated second."""
    market = MarketSimulator(ALL_MARKET_SYMBOLS, seed=7)
    out: list[str] = []
    now = 1_795_000_000_000
    for _ in range(records // ALL_MARKET_SYMBOLS):
        now += 1000
        data = market.tick(now)
        out.append(json.dumps({"stream": "!miniTicker@arr", "data": data}, separators=(",", ":")))
    return out


@contextlib.asynccontextmanager
async def script_server(frames: list[str]) -> AsyncIterator[str]:
    """A websocket server on a free loopback port; its first client gets ``frames``, as fast
    as it reads them. Yields the base URL."""
    first = True

    async def handler(connection: ServerConnection) -> None:
        nonlocal first
        if first:
            first = False
            for text in frames:
                await connection.send(text)
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None, close_timeout=1.0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


def producer_process(
    endpoint: str, url: str, aggregate: bool, records: int, out: Connection
) -> None:
    """The producer until ``records`` are put; sends (seconds, cpu seconds, counters)."""
    from producer.app import build_producer

    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    settings = load_settings(
        aws_endpoint_url=endpoint,
        binance_stream_url=url,
        binance_streams="!miniTicker@arr",
        metrics_port=-1,
    )
    clients = AwsClients(settings)
    metrics = Metrics("producer")

    async def main() -> tuple[float, float]:
        service, source = build_producer(settings, clients, metrics, aggregate=aggregate)
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop))
        await source.connected.wait()  # the exchange sends its script as soon as it sees us
        wall, cpu = time.perf_counter(), time.process_time()
        while metrics.value(Counters.RECORDS_PUT) < records:
            await asyncio.sleep(0.005)
            if running.done():
                running.result()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stop.set()
        await running
        return wall, cpu

    wall, cpu = asyncio.run(main())
    clients.close()
    out.send((wall, cpu, metrics.snapshot()))


async def run_one(
    endpoint: str, shape: str, frames: list[str], records: int, aggregate: bool
) -> Result:
    reset_account(endpoint)
    settings = load_settings(aws_endpoint_url=endpoint, kinesis_shard_count=SHARDS)
    clients = AwsClients(settings)
    provision(settings, clients)
    clients.close()
    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    async with script_server(frames) as url:
        child = spawn.Process(
            target=producer_process, args=(endpoint, url, aggregate, records, send)
        )
        child.start()
        wall, cpu, counters = await asyncio.to_thread(receive.recv)
    child.join(timeout=60)
    return Result(
        shape,
        aggregate,
        records,
        wall,
        cpu,
        counters[Counters.KINESIS_RECORDS_PUT],
        counters[Counters.KINESIS_BYTES_PUT],
        counters[Counters.PUT_REQUESTS],
    )


def shards_text(r: Result, rate: float) -> str:
    """'**1** (9 Kinesis records/s, 400 KiB/s)': shards needed at ``rate`` and what they carry."""
    shards, _ = r.shards_for(rate)
    return (
        f"**{shards}** ({rate * r.kinesis_records / r.records:,.0f} Kinesis records/s, "
        f"{rate * r.kinesis_bytes / r.records / 1024:,.0f} KiB/s)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--records", type=int, help=f"default {RECORDS:,}, {QUICK_RECORDS:,} quick")
    args = parser.parse_args(argv)
    for name, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    requested = args.records or (QUICK_RECORDS if args.quick else RECORDS)
    records = max(ALL_MARKET_SYMBOLS, requested - requested % ALL_MARKET_SYMBOLS)
    shapes = {
        f"!miniTicker@arr x{ALL_MARKET_SYMBOLS:,}": all_market_frames(records),
        "one symbol per frame": symbol_frames(records),
    }
    load = load_average()
    print(f"machine: {machine()}")
    print(
        f"{records:,} records per run into embedded Kinesis (moto server), {SHARDS} shards, "
        f"default producer settings; producer in its own process; load average {load}"
    )
    with moto_server() as endpoint:
        results = [
            asyncio.run(run_one(endpoint, shape, frames, records, aggregate))
            for shape, frames in shapes.items()
            for aggregate in (True, False)
        ]
    print(
        f"\n{'frames':<24}{'mode':<14}{'records/s':>10}{'CPU us/rec':>11}{'Kinesis rec':>12}"
        f"{'per user rec':>13}{'bytes/user rec':>15}{'requests':>9}"
    )
    for r in results:
        print(
            f"{r.shape:<24}{'aggregated' if r.aggregated else 'unaggregated':<14}"
            f"{r.records_per_s:>10,.0f}{r.cpu_us_per_record:>11.1f}{r.kinesis_records:>12,.0f}"
            f"{r.kinesis_records / r.records:>13.4f}{r.kinesis_bytes / r.records:>15.1f}"
            f"{r.requests:>9,.0f}"
        )
    for shape in shapes:
        agg, raw = (r for r in results if r.shape == shape)
        print(
            f"{shape}: aggregated {agg.records_per_s / raw.records_per_s:.1f}x records/s, "
            f"{raw.cpu_us_per_record / agg.cpu_us_per_record:.1f}x less CPU per record, "
            f"{raw.kinesis_records / agg.kinesis_records:.0f}x fewer Kinesis records"
        )
    agg, raw = results[0], results[1]
    rate = float(ALL_MARKET_SYMBOLS)
    print(f"\nshards for the all-market stream at {rate:,.0f} symbols/s (1 MiB/s, 1,000 rec/s)")
    for r in (agg, raw):
        shards, binding = r.shards_for(rate)
        print(
            f"  {'aggregated' if r.aggregated else 'unaggregated':<13}"
            f"{rate * r.kinesis_records / r.records:>8,.0f} Kinesis records/s "
            f"{rate * r.kinesis_bytes / r.records / 1024:>7,.0f} KiB/s -> {shards} shard(s), "
            f"bound by {binding}"
        )
    one_agg, one_raw = results[2], results[3]
    save_results(
        args.quick,
        "producer_ws",
        [
            (
                f"producer via websocket, `!miniTicker@arr` x{ALL_MARKET_SYMBOLS:,}, "
                "aggregated vs unaggregated",
                f"{agg.records_per_s:,.0f} vs {raw.records_per_s:,.0f} records/s "
                f"(**{agg.records_per_s / raw.records_per_s:.1f}x**), "
                f"{agg.cpu_us_per_record:.1f} vs {raw.cpu_us_per_record:.1f} µs CPU per record, "
                f"{agg.kinesis_records / agg.records:.2g} vs "
                f"{raw.kinesis_records / raw.records:.2g} Kinesis records per record",
            ),
            (
                "producer via websocket, one symbol per frame, aggregated vs unaggregated",
                f"{one_agg.records_per_s:,.0f} vs {one_raw.records_per_s:,.0f} records/s, "
                f"{one_agg.cpu_us_per_record:.0f} vs {one_raw.cpu_us_per_record:.0f} µs CPU "
                "per record",
            ),
            (
                f"shards for `!miniTicker@arr` at {rate:,.0f} symbols/s",
                f"aggregated {shards_text(agg, rate)}; unaggregated {shards_text(raw, rate)}",
            ),
        ],
        note=(
            f"The websocket producer rows ({records:,} records per run; producer CPU measured "
            f"in its own process) were measured at a load average of {load}."
        ),
    )


if __name__ == "__main__":
    main()
