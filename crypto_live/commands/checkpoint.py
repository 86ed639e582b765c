"""`crypto-live checkpoint show|reset`: a consumer group's checkpoints, moved safely."""

from __future__ import annotations

import argparse
import sys
from typing import cast

from core.settings import Settings

NAME = "checkpoint"
HELP = "show or reset a consumer group's checkpoints (safe while workers run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("show", "reset"))
    parser.add_argument("--consumer", choices=("dynamodb", "s3"), required=True)
    parser.add_argument(
        "--to",
        dest="position",
        help="reset: TRIM_HORIZON, LATEST, an ISO time, or shardId-N:<sequence>[:<sub>]",
    )
    parser.add_argument("--shards", help="comma list of shard ids (default: all)")
    parser.add_argument("--yes", action="store_true", help="do not ask before resetting")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from consumers.app import ConsumerKind, app_name, lease_table_name
    from consumers.engine.leases import DynamoLeaseStore, reset_checkpoint
    from consumers.operations.lag import group_leases, list_shards
    from consumers.operations.positions import parse_start
    from core.aws import AwsClients
    from core.errors import ConfigError

    kind = cast(ConsumerKind, args.consumer)
    console = Console(soft_wrap=True)
    clients = AwsClients(settings)
    try:
        table_name = lease_table_name(settings, kind)
        if args.action == "show":
            leases = group_leases(clients.dynamodb, table_name)
            table = Table(title=f"{app_name(settings, kind)} checkpoints ({table_name})")
            for column in ("shard", "owner", "checkpoint", "sub", "parents"):
                table.add_column(column)
            for lease in leases.values():
                table.add_row(
                    lease.shard_id,
                    lease.owner or "-",
                    lease.checkpoint,
                    str(lease.checkpoint_sub),
                    ",".join(lease.parents) or "-",
                )
            console.print(table if leases else f"{table_name}: no leases (group never ran)")
            return 0
        if not args.position:
            raise ConfigError("checkpoint reset needs --to <position>")
        window = settings.max_batch_timeout if kind == "s3" else None
        start = parse_start(args.position, option="--to", align_seconds=window)
        shards = [s["ShardId"] for s in list_shards(clients.kinesis, settings.kinesis_stream_name)]
        if start.shard_id:
            shards = [start.shard_id]
        elif args.shards:
            shards = [s for s in shards if s in set(args.shards.split(","))]
        question = (
            f"Reset {len(shards)} shard(s) of {app_name(settings, kind)} to {start.describe()}? "
            "Records after it are processed again (idempotently). [y/N] "
        )
        if not args.yes:
            if not sys.stdin.isatty():
                raise ConfigError("checkpoint reset asks for confirmation: pass --yes")
            if input(question).strip().lower() not in ("y", "yes"):
                console.print("nothing changed")
                return 1
        store = DynamoLeaseStore(clients.dynamodb, table_name)
        store.ensure_table()
        for shard_id in shards:
            # A sequence checkpoint keeps its sub-sequence (-1: the whole record is unread).
            sub = start.checkpoint_sub if start.checkpoint.isdigit() else 0
            lease = reset_checkpoint(store, shard_id, start.checkpoint, sub)
            console.print(f"{shard_id}: checkpoint now {lease.checkpoint}")
        return 0
    finally:
        clients.close()
