"""Peer benchmark: our producer against async-kinesis's aggregated producer, one moto server.

Both sides get the same simulated-market frames and each parses them; ours validates, writes
Avro and KPL-aggregates per shard, async-kinesis (KPLJsonProcessor, pinned, in a venv of its own
under .cache/peer-venv) JSON-serialises and KPL-aggregates. Each round runs each side in a fresh
process (A B A B ...) on a fresh 4-shard stream; its records/s and client CPU (getrusage of that
process, from the first frame to the last record confirmed) are taken, then the stream is read
back: every record exactly once, and per-key order. Each side ends by flushing what it still
buffers (async-kinesis: its flush(); ours: the service stops after the last frame, and its
close flushes), so neither waits out its 0.1 s buffer time at the end. Medians are printed
with the load average.
Then the consumer half (bench.peer_consumer) compares the consumers the same way.
`make bench-peer`; `--quick` for a smoke run (results printed, not saved).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".cache" / "peer-venv"
# The peer, pinned: async-kinesis with its KPL extra, its DynamoDB extra (the consumer half's
# checkpointer) and what those resolved to: aioboto3 pins aiobotocore 2.x (none supports 3.x).
PEER_REQUIREMENTS = (
    "async-kinesis[kpl,dynamodb]==3.0.1",
    "aioboto3==15.5.0",
    "aiobotocore==2.25.1",
)
SHARDS = 4
RECORDS, ROUNDS = 40_000, 3
QUICK_RECORDS, QUICK_ROUNDS = 4_000, 1
OURS, PEER = "crypto-live", "async-kinesis"
PEER_UNTHROTTLED = 1_000_000


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the two sides, each run in its own process -------------------------------------------


async def _run_ours(endpoint: str, stream: str, texts: list[str]) -> dict[str, float]:
    from core.dead_letters import MemoryDeadLetterStore
    from core.heap import freeze_startup_heap
    from core.metrics import Metrics
    from core.settings import load_settings
    from producer.kinesis import KinesisStreamWriter
    from producer.publisher import Publisher
    from producer.service import ProducerService
    from producer.source import tolerant_json_loads
    from schemas.codec import default_codec

    settings = load_settings(aws_endpoint_url=endpoint, kinesis_stream_name=stream)
    from core.aws import AwsClients

    clients = AwsClients(settings)
    metrics = Metrics("producer")
    # Configured as producer.app configures it (AGGREGATION_MAX_BYTES etc. from the environment).
    publisher = Publisher(
        KinesisStreamWriter(clients.kinesis, stream),
        metrics,
        max_bytes=settings.aggregation_max_bytes,
        max_in_flight=settings.max_in_flight_puts,
        max_buffered_time=settings.record_max_buffered_time_ms / 1000,
    )
    clock: dict[str, float] = {}

    class Frames:
        """Parses each frame as it hands it over, as the websocket source does; after the last
        the service stops, which flushes (the peer's final flush() is the same)."""

        async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
            clock["wall"], clock["cpu"] = time.perf_counter(), _cpu_seconds()
            for text in texts:
                yield tolerant_json_loads(text)

    service = ProducerService(
        Frames(), publisher, default_codec(), MemoryDeadLetterStore(), metrics
    )
    freeze_startup_heap()  # as `crypto-live producer` does once the service is built
    summary = await service.run(asyncio.Event())  # until every record is in Kinesis
    cpu, wall = _cpu_seconds() - clock["cpu"], time.perf_counter() - clock["wall"]
    clients.close()
    if summary.records_put != len(texts):
        raise SystemExit(f"our producer put {summary.records_put} of {len(texts)} records")
    return {"seconds": wall, "cpu_seconds": cpu}


async def _run_peer(endpoint: str, stream: str, texts: list[str]) -> dict[str, float]:
    # Only in the peer's own venv (ensure_peer_venv), never in ours.
    from kinesis import Producer  # type: ignore[import-not-found]
    from kinesis.processors import KPLJsonProcessor  # type: ignore[import-not-found]

    async with Producer(
        stream_name=stream,
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "ap-southeast-1"),
        processor=KPLJsonProcessor(),
        use_list_shards=True,
        # Its client-side throttles (1,000 records and 1 MiB per shard per second) and its
        # 0.5 s buffer would measure the throttle, not the client: lifted, and our 0.1 s.
        put_rate_limit_per_shard=PEER_UNTHROTTLED,
        put_bandwidth_limit_per_shard=PEER_UNTHROTTLED,
        buffer_time=0.1,
    ) as producer:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        for text in texts:
            await producer.put(json.loads(text)["data"])
        await producer.flush()
    # Leaving the block is its close: the final flush is part of the run.
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": _cpu_seconds() - cpu}


def _side_main(side: str, endpoint: str, stream: str, frames_path: str) -> None:
    texts = Path(frames_path).read_text(encoding="utf-8").splitlines()
    run = _run_ours if side == OURS else _run_peer
    print(json.dumps(asyncio.run(run(endpoint, stream, texts))))


# -- the runner (our venv) -----------------------------------------------------------------


def ensure_peer_venv() -> Path:
    """The peer's own venv, created and installed once (pinned); returns its python."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(PEER_REQUIREMENTS):
        return python
    print(f"installing {', '.join(PEER_REQUIREMENTS)} into {PEER_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    stamp.write_text("\n".join(PEER_REQUIREMENTS))
    return python


def run_side(
    python: Path, side: str, *args: str | Path, module: str = "bench.peer"
) -> dict[str, float]:
    """Run ``python -m module --side side *args`` (one side, its own process); its last line
    of output, JSON, is the result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [str(python), "-m", module, "--side", side, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        raise SystemExit(f"{side} side failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def read_stream(kinesis: Any, stream: str) -> dict[str, list[tuple[str, bytes]]]:
    """Every user record of every shard, in shard order: (partition key, data)."""
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    out: dict[str, list[tuple[str, bytes]]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        users: list[tuple[str, bytes]] = []
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for user in iter_deaggregate_records(page["Records"], data_format="Boto3"):
                body = user["kinesis"]
                data = base64.b64decode(body["data"]) if body.get("aggregated") else body["data"]
                users.append((body["partitionKey"], data))
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
        out[shard["ShardId"]] = users
    return out


def check_delivery(
    side: str, shards: dict[str, list[tuple[str, bytes]]], sent: int
) -> dict[str, int]:
    """Each record once, per-key order within a shard, and keys split over shards."""
    from schemas.codec import default_codec

    codec = default_codec()
    seen: Counter[tuple[str, int]] = Counter()
    regressions = 0
    shards_of: dict[str, set[str]] = defaultdict(set)
    for shard_id, users in shards.items():
        last: dict[str, int] = {}
        for _, data in users:
            if side == OURS:
                record = codec.decode(data)
                symbol, event_time = str(record["symbol"]), int(record["event_time"])
            else:
                payload = json.loads(data)
                symbol, event_time = str(payload["s"]), int(payload["E"])
            seen[(symbol, event_time)] += 1
            shards_of[symbol].add(shard_id)
            if event_time < last.get(symbol, -1):
                regressions += 1
            last[symbol] = event_time
    return {
        "distinct": len(seen),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "missing": sent - len(seen),
        "regressions": regressions,
        "split_keys": sum(1 for s in shards_of.values() if len(s) > 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    from bench.common import bench_parser, frames, load_average, machine, moto_process
    from core.aws import AwsClients
    from core.settings import load_settings

    args = bench_parser(__doc__).parse_args(argv)
    records = QUICK_RECORDS if args.quick else RECORDS
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    peer_python = ensure_peer_venv()
    ours_python = Path(sys.executable)
    print(f"machine: {machine()}; load average before: {load_average()}")
    results: dict[str, list[dict[str, float]]] = {OURS: [], PEER: []}
    checks: dict[str, list[dict[str, int]]] = {OURS: [], PEER: []}
    with tempfile.TemporaryDirectory() as tmp, moto_process() as moto:
        frames_path = Path(tmp) / "frames.txt"
        frames_path.write_text("\n".join(frames(records)) + "\n", encoding="utf-8")
        settings = load_settings(aws_endpoint_url=moto.endpoint)
        clients = AwsClients(settings)
        kinesis = clients.kinesis
        for round_ in range(rounds):
            for side, python in ((OURS, ours_python), (PEER, peer_python)):
                stream = f"peer-{side}-{round_}"
                kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
                kinesis.get_waiter("stream_exists").wait(StreamName=stream)
                row = run_side(python, side, moto.endpoint, stream, frames_path)
                check = check_delivery(side, read_stream(kinesis, stream), records)
                kinesis.delete_stream(StreamName=stream)
                results[side].append(row)
                checks[side].append(check)
                print(
                    f"round {round_ + 1} {side:<14} {records / row['seconds']:>9,.0f} records/s "
                    f"{row['cpu_seconds'] / records * 1e6:>6.1f} us CPU/record  {check}  "
                    f"load {load_average()}",
                    flush=True,
                )
        clients.close()
    report(args.quick, records, rounds, results, checks)
    from bench.peer_consumer import compare_consumers

    compare_consumers(args.quick, peer_python)


def report(
    quick: bool,
    records: int,
    rounds: int,
    results: dict[str, list[dict[str, float]]],
    checks: dict[str, list[dict[str, int]]],
) -> None:
    from bench.common import load_average, save_results

    rate = {s: statistics.median(records / r["seconds"] for r in rs) for s, rs in results.items()}
    cpu = {
        s: statistics.median(r["cpu_seconds"] / records * 1e6 for r in rs)
        for s, rs in results.items()
    }
    print(
        f"\n{records:,} records, {SHARDS} shards, {rounds} interleaved rounds, medians; "
        f"load average after: {load_average()}"
    )
    print(f"{'':<16}{OURS:>16}{PEER:>16}{'ratio':>8}")
    print(
        f"{'records/s':<16}{rate[OURS]:>16,.0f}{rate[PEER]:>16,.0f}{rate[OURS] / rate[PEER]:>7.2f}x"
    )
    print(
        f"{'CPU us/record':<16}{cpu[OURS]:>16.1f}{cpu[PEER]:>16.1f}{cpu[PEER] / cpu[OURS]:>7.2f}x"
    )

    def delivery(side: str) -> str:
        worst = {k: max(c[k] for c in checks[side]) for k in checks[side][0]}
        exact = (
            "every record once"
            if not worst["missing"] and not worst["duplicates"]
            else (f"{worst['missing']} missing, {worst['duplicates']} duplicated (worst round)")
        )
        return (
            f"{exact}; {worst['regressions']} per-key order regressions within a shard, "
            f"{worst['split_keys']} keys split over shards (worst round)"
        )

    for side in (OURS, PEER):
        print(f"{side}: {delivery(side)}")
    save_results(
        quick,
        "peer",
        [
            (
                "producer vs async-kinesis 3.0.1 (KPL aggregated), same moto, same frames",
                f"**{rate[OURS] / rate[PEER]:.2f}x** records/s: "
                f"{rate[OURS]:,.0f} vs {rate[PEER]:,.0f}; "
                f"client CPU {cpu[OURS]:.1f} vs {cpu[PEER]:.1f} us per record "
                f"(medians of {rounds} interleaved rounds, {records:,} records, {SHARDS} shards, "
                f"load average {load_average()})",
            ),
            (f"delivery, {OURS}", delivery(OURS)),
            (f"delivery, {PEER} (random partition keys, no validation)", delivery(PEER)),
        ],
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        _side_main(*sys.argv[2:6])
    else:
        main()
