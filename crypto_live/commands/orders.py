"""`crypto-live orders snapshot`: the account's orders of a symbol into the lake and DynamoDB."""

from __future__ import annotations

import argparse

from core.settings import Settings
from crypto_live.commands._binance_options import add_endpoint_arguments

NAME = "orders"
HELP = "account orders (signed allOrders) into the lake (Parquet, CSV) and DynamoDB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("snapshot",), help="take one snapshot")
    parser.add_argument("--symbol", required=True, help="the pair, e.g. BTCUSDT")
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--limit", type=int, help="the N most recent orders, 1..1000 (default 1000)"
    )
    window.add_argument("--minutes", type=int, help="every order of the last N minutes (<= 1440)")
    add_endpoint_arguments(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from core.aws import AwsClients
    from core.errors import ConfigError
    from crypto_live.orders.snapshot import SnapshotRequest, take_snapshot

    if args.minutes is not None and not 1 <= args.minutes <= 24 * 60:
        raise ConfigError(f"--minutes must be 1..1440, got {args.minutes}")
    if args.limit is not None and not 1 <= args.limit <= 1000:
        raise ConfigError(f"--limit must be 1..1000, got {args.limit}")
    limit = args.limit if args.limit is not None or args.minutes is not None else 1000
    request = SnapshotRequest(args.symbol.upper(), limit=limit, minutes=args.minutes)
    clients = AwsClients(settings)
    try:
        summary = take_snapshot(settings, clients, request)
    finally:
        clients.close()
    if not summary.orders:
        print(f"no orders of {summary.symbol} to snapshot")
        return 0
    print(
        f"{summary.orders:,} orders of {summary.symbol} (ids {summary.first_id}.."
        f"{summary.last_id}, {summary.requests} requests, {summary.retries} retries)"
    )
    print(f"lake ({summary.objects_written} objects written):")
    print(f"  s3://{settings.s3_bucket}/{summary.parquet_key}")
    print(f"  s3://{settings.s3_bucket}/{summary.csv_key}")
    print(
        f"dynamodb: {settings.dynamo_orders_table_name} ({summary.items_written:,} items written, "
        f"{summary.orders - summary.items_written:,} unchanged)"
    )
    return 0
