"""`crypto-live status`: every consumer group, every shard: owner, checkpoint, lag."""

from __future__ import annotations

import argparse
import time

from core.settings import Settings

NAME = "status"
HELP = "per consumer group and shard: owner, checkpoint, lag; exit 1 when lagging"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consumer", choices=("dynamodb", "s3"), help="one group (default: all)")
    parser.add_argument(
        "--max-lag-ms",
        type=int,
        default=60_000,
        help="exit 1 when any shard's oldest unread record is older (default 60000)",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from consumers.app import KINDS, app_name, lease_table_name
    from consumers.operations.lag import group_leases, list_shards, shard_lag
    from core.aws import AwsClients

    console = Console(soft_wrap=True)
    clients = AwsClients(settings)
    lagging = False
    try:
        shards = list_shards(clients.kinesis, settings.kinesis_stream_name)
        for kind in [args.consumer] if args.consumer else list(KINDS):
            leases = group_leases(clients.dynamodb, lease_table_name(settings, kind))
            table = Table(title=f"{app_name(settings, kind)} on {settings.kinesis_stream_name}")
            for column in ("shard", "owner", "checkpoint", "lag ms", "lag records", "heartbeat"):
                table.add_column(column, justify="right" if "lag" in column else "left")
            now_ms = int(time.time() * 1000)
            for shard in shards:
                lag = shard_lag(
                    clients.kinesis,
                    settings.kinesis_stream_name,
                    shard,
                    leases.get(shard["ShardId"]),
                    settings.initial_position,
                )
                lagging |= lag.millis > args.max_lag_ms
                beat = f"{(now_ms - lag.heartbeat_ms) / 1000:.1f}s ago" if lag.heartbeat_ms else "-"
                table.add_row(
                    lag.shard_id + (" (closed)" if lag.closed else ""),
                    lag.owner or "-",
                    lag.checkpoint if len(lag.checkpoint) < 40 else lag.checkpoint[:37] + "...",
                    f"{lag.millis:,}",
                    lag.records_text,
                    beat,
                )
            console.print(table)
    finally:
        clients.close()
    console.print("LAGGING" if lagging else "healthy", style="red" if lagging else "green")
    return 1 if lagging else 0
