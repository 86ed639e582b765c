"""Peer benchmark, consumer half: our consumer engine against async-kinesis's Consumer.

Each round, each side gets a fresh 4-shard stream holding the same simulated-market events,
written by its own producer (ours: Avro in per-shard KPL aggregates, producer.publisher; theirs:
JSON in KPL aggregates, async-kinesis's Producer with KPLJsonProcessor) and checked whole, and
drains it into a sink that only counts, checkpointing in a DynamoDB lease table, all on one
moto server. Rounds interleave (A B A B), each drain in a fresh process and consumer group;
records/s and client CPU (getrusage of that process) run from the start of the drain (clients,
lease table and shard discovery included) until the last record is counted, and every record
must be counted exactly once. `python -m bench.peer` runs it after the producer half; the top
level imports only the standard library, as the peer's venv runs this module too.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.peer import OURS, PEER, SHARDS, _cpu_seconds, run_side

if TYPE_CHECKING:
    from consumers.engine.records import ConsumedRecord, Position

RECORDS, ROUNDS = 40_000, 5
QUICK_RECORDS, QUICK_ROUNDS = 4_000, 1
DRAIN_TIMEOUT = 120.0  # seconds; a side still short of records by then reports them missing
# async-kinesis's settings where its defaults would measure a throttle or a pause rather than
# the client. GetRecords at most once per second per shard is its default; AWS allows five.
# After an empty GetRecords its fetch loop sleeps 2 s before it looks at the next shard (an
# empty shard holds up the others: its random partition keys often leave one empty); ours
# waits IDLE_TIME_BETWEEN_READS_MS, 0.5 s, and only on that shard. It gets our 0.5 s.
PEER_FETCH_RATE = 5
PEER_IDLE_SECONDS = 0.5
MODULE = "bench.peer_consumer"  # what each side's process runs (python -m)

Key = tuple[str, int]  # (symbol, event time in ms): one market event


def _clock() -> tuple[float, float]:
    """(wall, CPU) seconds now; CPU is this process's, every thread (getrusage)."""
    return time.perf_counter(), _cpu_seconds()


@dataclass
class CountingSink:
    """The count-only sink both consumers drain into: counts records by key and notes the
    clock at the first record and when the last expected key has been counted."""

    expected: int
    clock: Callable[[], tuple[float, float]] = _clock
    seen: Counter[Key] = field(default_factory=Counter)
    started: tuple[float, float] = (0.0, 0.0)
    first: tuple[float, float] | None = None
    finished: tuple[float, float] | None = None

    def start(self) -> None:
        self.started = self.clock()

    def add(self, symbol: str, event_time: int) -> bool:
        """Count one record; True once every expected key has been counted."""
        self.seen[(symbol, event_time)] += 1
        if self.first is None:
            self.first = self.clock()
        if self.finished is None and len(self.seen) >= self.expected:
            self.finished = self.clock()
        return self.finished is not None

    def timings(self) -> dict[str, float]:
        """Seconds and CPU seconds from start() to the last record (or to now, if unfinished),
        and to the first record counted."""
        end = self.finished or self.clock()
        first = self.first or end
        return {
            "seconds": end[0] - self.started[0],
            "cpu_seconds": end[1] - self.started[1],
            "first_seconds": first[0] - self.started[0],
            "first_cpu_seconds": first[1] - self.started[1],
        }


def frame_keys(texts: Iterable[str]) -> set[Key]:
    """The key of every combined-stream frame, as both producers wrote it."""
    keys: set[Key] = set()
    for text in texts:
        data = json.loads(text)["data"]
        keys.add((str(data["s"]), int(data["E"])))
    return keys


def delivery(expected: set[Key], seen: Counter[Key]) -> dict[str, int]:
    """How a drain delivered: records counted, distinct, duplicated, missing, unexpected."""
    return {
        "counted": sum(seen.values()),
        "distinct": len(seen),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "missing": len(expected - seen.keys()),
        "unexpected": len(seen.keys() - expected),
    }


# -- the two sides, each run in its own process -------------------------------------------


class CountingProcessor:
    """A ShardProcessor that counts: each batch is 'durable' once counted, so the engine
    checkpoints after every GetRecords call, as with a real sink."""

    def __init__(self, sink: CountingSink, done: asyncio.Event) -> None:
        self._sink = sink
        self._done = done

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        for consumed in records:
            if self._sink.add(consumed.record["symbol"], consumed.record["event_time"]):
                self._done.set()
        return records[-1].position if records else None

    async def at_tip(self, now_ms: int) -> Position | None:
        return None

    async def shard_ended(self) -> Position | None:
        return None

    async def shutdown(self) -> Position | None:
        return None

    def abandon(self) -> None:
        pass


async def _drain_ours(endpoint: str, stream: str, app: str, sink: CountingSink) -> None:
    from consumers.app import Sink, build_worker
    from core.aws import AwsClients
    from core.heap import freeze_startup_heap
    from core.metrics import Metrics
    from core.settings import load_settings

    sink.start()
    settings = load_settings(
        aws_endpoint_url=endpoint, kinesis_stream_name=stream, consumer_app_name=app
    )
    clients = AwsClients(settings)
    done, stop = asyncio.Event(), asyncio.Event()
    sink_of_group = Sink(lambda shard_id: CountingProcessor(sink, done), close=lambda: None)
    # The real engine and lease table (<app>-leases), default settings; "dynamodb" only names
    # the group when CONSUMER_APP_NAME is unset, and it is set here.
    worker = build_worker(settings, clients, "dynamodb", Metrics("bench-peer"), sink_of_group)
    freeze_startup_heap()  # as `crypto-live consume` does once its worker is built (run_consumer)
    running = asyncio.create_task(worker.run(stop))
    waiting = asyncio.create_task(done.wait())
    await asyncio.wait(
        {running, waiting}, timeout=DRAIN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    waiting.cancel()
    stop.set()
    await running  # a worker's failure is raised here
    clients.close()


async def _drain_peer(endpoint: str, stream: str, app: str, sink: CountingSink) -> None:
    # Only in the peer's own venv (bench.peer.ensure_peer_venv), never in ours.
    from kinesis import Consumer  # type: ignore[import-not-found]
    from kinesis.dynamodb import DynamoDBCheckPointer  # type: ignore[import-not-found]
    from kinesis.processors import KPLJsonProcessor  # type: ignore[import-not-found]

    region = os.environ.get("AWS_DEFAULT_REGION", "ap-southeast-1")

    async def drain() -> None:
        checkpointer = DynamoDBCheckPointer(name=app, endpoint_url=endpoint, region_name=region)
        async with Consumer(
            stream_name=stream,
            endpoint_url=endpoint,
            region_name=region,
            processor=KPLJsonProcessor(),
            checkpointer=checkpointer,
            iterator_type="TRIM_HORIZON",
            use_list_shards=True,
            shard_fetch_rate=PEER_FETCH_RATE,
            sleep_time_no_records=PEER_IDLE_SECONDS,
        ) as consumer:
            while sink.finished is None:
                # Its iteration ends after idle_timeout (2 s) without a record: iterate again.
                async for item in consumer:
                    if sink.add(item["s"], item["E"]):
                        break

    sink.start()
    try:
        await asyncio.wait_for(drain(), DRAIN_TIMEOUT)
    except TimeoutError:
        if sink.finished is None:
            return  # short of records: reported as missing
        raise  # counted all, but its close hung


def _side_main(side: str, endpoint: str, stream: str, app: str, frames_path: str) -> None:
    expected = frame_keys(Path(frames_path).read_text(encoding="utf-8").splitlines())
    sink = CountingSink(len(expected))
    drain = _drain_ours if side == OURS else _drain_peer
    asyncio.run(drain(endpoint, stream, app, sink))
    print(json.dumps({**sink.timings(), **delivery(expected, sink.seen)}))


# -- the runner (our venv) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerBench:
    """Everything a round needs on the runner's side: moto, both pythons, the events."""

    endpoint: str
    pythons: dict[str, Path]
    frames_path: Path
    market: list[Any]  # the same events as validated records (our producer's input)
    clients: Any  # core.aws.AwsClients on moto

    def backlog(self, side: str, stream: str) -> list[int]:
        """A fresh 4-shard stream written by the side's own producer; returns the user records
        per shard, after checking that it holds every record once."""
        from bench.common import publish
        from bench.peer import check_delivery, read_stream
        from core.settings import load_settings

        self.clients.kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
        self.clients.kinesis.get_waiter("stream_exists").wait(StreamName=stream)
        if side == OURS:
            settings = load_settings(aws_endpoint_url=self.endpoint, kinesis_stream_name=stream)
            publish(settings, self.clients, self.market)
        else:  # async-kinesis's Producer, as the producer half runs it
            run_side(self.pythons[PEER], PEER, self.endpoint, stream, self.frames_path)
        shards = read_stream(self.clients.kinesis, stream)
        check = check_delivery(side, shards, len(self.market))
        if check["missing"] or check["duplicates"]:
            raise SystemExit(f"{side}'s backlog does not hold every record once: {check}")
        return [len(users) for users in shards.values()]

    def drain(self, side: str, stream: str) -> dict[str, float]:
        """One measured drain in the side's own process, by a new consumer group."""
        args = (self.endpoint, stream, f"{stream}-group", self.frames_path)
        return run_side(self.pythons[side], side, *args, module=MODULE)


def compare_consumers(quick: bool, peer_python: Path) -> None:
    """Interleaved rounds, each on fresh backlogs; prints the table, saves the README rows."""
    from bench.common import frames, load_average, market_records, moto_process
    from core.aws import AwsClients
    from core.settings import load_settings

    records = QUICK_RECORDS if quick else RECORDS
    rounds = QUICK_ROUNDS if quick else ROUNDS
    results: dict[str, list[dict[str, float]]] = {OURS: [], PEER: []}
    print(f"\nconsumers: {records:,} records each; load average before: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp, moto_process() as moto:
        frames_path = Path(tmp) / "frames.txt"
        frames_path.write_text("\n".join(frames(records)) + "\n", encoding="utf-8")
        pythons = {OURS: Path(sys.executable), PEER: peer_python}
        clients = AwsClients(load_settings(aws_endpoint_url=moto.endpoint))
        bench = ConsumerBench(moto.endpoint, pythons, frames_path, market_records(records), clients)
        for round_ in range(rounds):
            for side in (OURS, PEER):
                stream = f"peer-consumer-{side}-{round_}"
                per_shard = bench.backlog(side, stream)
                row = bench.drain(side, stream)
                clients.kinesis.delete_stream(StreamName=stream)
                results[side].append({**row, "empty_shards": per_shard.count(0)})
                print(
                    f"round {round_ + 1} {side:<14} {records / row['seconds']:>9,.0f} records/s "
                    f"{row['cpu_seconds'] / records * 1e6:>6.1f} us CPU/record  first record "
                    f"{row['first_seconds']:.2f} s ({row['first_cpu_seconds']:.2f} s CPU)  "
                    f"{_delivery_text([row])}; records per shard {per_shard}  "
                    f"load {load_average()}",
                    flush=True,
                )
        clients.close()
    report(quick, records, rounds, results)


def _delivery_text(rows: Sequence[dict[str, float]]) -> str:
    worst = {k: max(int(r[k]) for r in rows) for k in ("duplicates", "missing", "unexpected")}
    if not any(worst.values()):
        return "every record counted once"
    return (
        f"{worst['missing']} missing, {worst['duplicates']} duplicated, "
        f"{worst['unexpected']} unexpected (worst round)"
    )


def report(
    quick: bool, records: int, rounds: int, results: dict[str, list[dict[str, float]]]
) -> None:
    from bench.common import load_average, save_results

    def median(side: str, value: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(value(row) for row in results[side])

    rate = {s: median(s, lambda r: records / r["seconds"]) for s in results}
    cpu = {s: median(s, lambda r: r["cpu_seconds"] / records * 1e6) for s in results}
    first = {s: median(s, lambda r: r["first_seconds"]) for s in results}
    first_cpu = {s: median(s, lambda r: r["first_cpu_seconds"]) for s in results}
    print(
        f"\n{records:,} records drained, {SHARDS} shards, {rounds} interleaved rounds, medians; "
        f"load average after: {load_average()}"
    )
    print(f"{'':<18}{OURS:>16}{PEER:>16}{'ratio':>8}")
    print(
        f"{'records/s':<18}{rate[OURS]:>16,.0f}{rate[PEER]:>16,.0f}{rate[OURS] / rate[PEER]:>7.2f}x"
    )
    print(
        f"{'CPU us/record':<18}{cpu[OURS]:>16.1f}{cpu[PEER]:>16.1f}{cpu[PEER] / cpu[OURS]:>7.2f}x"
    )
    print(f"{'first record, s':<18}{first[OURS]:>16.2f}{first[PEER]:>16.2f}")
    print(f"{'CPU to first, s':<18}{first_cpu[OURS]:>16.2f}{first_cpu[PEER]:>16.2f}")
    for side in (OURS, PEER):
        print(f"{side}: {_delivery_text(results[side])}")
    save_results(
        quick,
        "peer_consumer",
        [
            (
                "consumer vs async-kinesis 3.0.1 Consumer, draining a backlog into a count-only "
                "sink with DynamoDB checkpoints, same moto",
                f"**{rate[OURS] / rate[PEER]:.2f}x** records/s: "
                f"{rate[OURS]:,.0f} vs {rate[PEER]:,.0f}; "
                f"client CPU {cpu[OURS]:.1f} vs {cpu[PEER]:.1f} us per record; first record "
                f"after {first[OURS]:.2f} vs {first[PEER]:.2f} s (medians of {rounds} "
                f"interleaved rounds, {records:,} records, {SHARDS} shards, "
                f"load average {load_average()})",
            ),
            (
                f"consumer backlogs and settings, {OURS}",
                "a fresh stream per round written by our producer (publish_records: Avro, "
                "per-shard KPL aggregates of up to 51,200 bytes); the engine (Worker, lease "
                "table <app>-leases) with default settings (GetRecords limit 10,000, 0.5 s "
                f"between reads); {_delivery_text(results[OURS])}",
            ),
            (
                f"consumer backlogs and settings, {PEER}",
                "a fresh stream per round written by its Producer (KPLJsonProcessor: JSON in "
                "KPL aggregates of up to 1 MiB under random partition keys: "
                f"{sum(int(r['empty_shards']) for r in results[PEER])} of "
                f"{SHARDS * rounds} shards were empty); its Consumer with KPLJsonProcessor, "
                "DynamoDBCheckPointer, TRIM_HORIZON, ListShards, "
                f"shard_fetch_rate={PEER_FETCH_RATE} (AWS's per-shard GetRecords limit; its "
                f"default 1/s), sleep_time_no_records={PEER_IDLE_SECONDS} (our idle time "
                "between reads; its default 2 s, for which an empty shard holds up the others), "
                f"other settings its defaults; {_delivery_text(results[PEER])}",
            ),
        ],
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        _side_main(*sys.argv[2:7])
