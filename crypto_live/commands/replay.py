"""`crypto-live replay`: re-drive a stream range, or the S3 archive, into a sink."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, cast

from core.settings import Settings

NAME = "replay"
HELP = "re-read a stream range (or the S3 archive) into a sink, beside the live consumers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consumer", choices=("dynamodb", "s3"), help="the sink to re-drive")
    parser.add_argument(
        "--from",
        dest="start",
        default="TRIM_HORIZON",
        help="TRIM_HORIZON, an ISO time, or shardId-N:<sequence> (default TRIM_HORIZON)",
    )
    parser.add_argument("--to", dest="end", help="ISO time: replay records that arrived before it")
    parser.add_argument("--shards", help="comma list of shard ids (default: all)")
    parser.add_argument("--from-archive", help="s3://bucket/prefix of the raw JSONL archive")
    parser.add_argument(
        "--target",
        choices=("dynamodb", "kinesis"),
        default="dynamodb",
        help="with --from-archive: rebuild DynamoDB, or re-put into the stream",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    from core.errors import ConfigError

    if args.from_archive:
        return _archive(settings, args)
    if not args.consumer:
        raise ConfigError("replay needs --consumer dynamodb|s3 (or --from-archive s3://...)")
    return _stream(settings, args)


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def _stream(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.app import ConsumerKind, dead_letter_writer, processor_factory
    from consumers.engine.leases import Lease
    from consumers.operations.lag import list_shards, shard_lag
    from consumers.operations.positions import parse_start, parse_time, window_ceil_ms
    from consumers.operations.replay import ReplayPlan, replay
    from core.aws import AwsClients
    from core.metrics import Counters, Metrics
    from schemas.codec import default_codec

    kind = cast(ConsumerKind, args.consumer)
    window = settings.max_batch_timeout if kind == "s3" else None
    start = parse_start(args.start, option="--from", align_seconds=window)
    end_ms = None
    if args.end:
        end = parse_time(args.end, "--to")
        end_ms = window_ceil_ms(end, window) if window else int(end.timestamp() * 1000)
    clients = AwsClients(settings)
    metrics = Metrics(f"replay-{kind}")
    sink = processor_factory(settings, clients, kind, metrics)
    try:
        shards = list_shards(clients.kinesis, settings.kinesis_stream_name)
        wanted = set(args.shards.split(",")) if args.shards else None
        if start.shard_id:
            wanted = {start.shard_id}
        chosen = [s for s in shards if wanted is None or s["ShardId"] in wanted]
        estimate = sum(
            shard_lag(
                clients.kinesis,
                settings.kinesis_stream_name,
                shard,
                Lease(shard["ShardId"], None, 0, start.checkpoint, start.checkpoint_sub),
                start.checkpoint,
            ).records
            for shard in chosen
        )
        plan = ReplayPlan(start, end_ms, tuple(s["ShardId"] for s in chosen), kind == "s3")
        closed = {
            s["ShardId"]: int(s["SequenceNumberRange"]["EndingSequenceNumber"])
            for s in shards
            if "EndingSequenceNumber" in s["SequenceNumberRange"]
        }
        print(f"replaying {len(chosen)} shards into {kind} from {start.describe()}")
        with _progress() as progress:
            task = progress.add_task(f"replay -> {kind}", total=estimate or None)
            replayed = asyncio.run(
                replay(
                    plan,
                    kinesis=clients.kinesis,
                    stream=settings.kinesis_stream_name,
                    processors=sink.processors,
                    codec=default_codec(),
                    dead_letters=dead_letter_writer(clients, settings, f"replay-{kind}", metrics),
                    metrics=metrics,
                    closed_ending=closed,
                    on_progress=lambda: progress.update(
                        task, completed=metrics.value(Counters.RECORDS_REPLAYED)
                    ),
                )
            )
            progress.update(task, completed=replayed, total=max(replayed, estimate))
        sink.drain()  # no later owner will write what is still queued
    finally:
        sink.close()
        clients.close()
    print(f"replayed {replayed:,} records into {kind}")
    return 0


def _archive(settings: Settings, args: argparse.Namespace) -> int:
    from consumers.operations.archive import archive_keys, parse_s3_url, read_archive
    from core.aws import AwsClients

    bucket, prefix = parse_s3_url(args.from_archive)
    clients = AwsClients(settings)
    bad = records = 0
    try:
        keys = archive_keys(clients.s3, bucket, prefix)
        print(
            f"rebuilding {args.target} from {len(keys)} archive objects in s3://{bucket}/{prefix}"
        )
        write = _dynamodb_writer(settings, clients) if args.target == "dynamodb" else None
        with _progress() as progress:
            task = progress.add_task(f"archive -> {args.target}", total=len(keys))
            for obj in read_archive(clients.s3, bucket, keys):
                if write is not None:
                    write(obj.records)
                else:
                    _put_into_stream(settings, clients, obj.records)
                records += len(obj.records)
                bad += obj.bad_lines
                progress.advance(task)
    finally:
        clients.close()
    print(f"rebuilt {records:,} records from the archive ({bad} unreadable lines skipped)")
    return 1 if bad else 0


def _dynamodb_writer(settings: Settings, clients: Any) -> Any:
    from consumers.dynamodb.items import coalesce_latest, dedupe_history, history_item
    from consumers.dynamodb.writer import DynamoDbWriter
    from core.metrics import Metrics

    writer = DynamoDbWriter(
        clients.dynamodb,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        Metrics("replay-archive"),
        max_in_flight=settings.dynamodb_max_in_flight,
    )

    def write(records: list[dict[str, Any]]) -> None:
        items = dedupe_history(history_item(r, settings.retention_ttl_days) for r in records)
        writer.write_history(items)
        writer.update_latest(coalesce_latest(records))

    return write


def _put_into_stream(settings: Settings, clients: Any, records: list[dict[str, Any]]) -> None:
    from producer.kinesis import KinesisStreamWriter
    from producer.publisher import publish_records

    writer = KinesisStreamWriter(clients.kinesis, settings.kinesis_stream_name)
    asyncio.run(publish_records(writer, records, settings.shutdown_timeout_seconds))
