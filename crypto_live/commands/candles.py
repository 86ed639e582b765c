"""`crypto-live candles gaps [--repair]`: missing closed 1-minute candles in the candles table,
and their repair through the backfill path (REST klines -> Kinesis -> the consumers)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from core.aws import AwsClients
    from crypto_live.backfill.gaps import SymbolGaps
    from crypto_live.backfill.minutes import MinuteRange
    from crypto_live.backfill.repair import CandleKeys

NAME = "candles"
HELP = "missing closed 1-minute candles in the candles table; --repair backfills them"
GAPS_EXIT = 3  # missing minutes found (or left after --repair)
DEFAULT_WAIT_SECONDS = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crypto_live.commands.backfill import add_binance_arguments

    parser.add_argument("action", choices=("gaps",), help="list (and --repair) missing minutes")
    parser.add_argument(
        "--symbol",
        dest="symbols",
        action="append",
        metavar="S",
        help="a pair, repeatable or comma-separated (default: the subscribed <symbol>@kline_1m "
        "streams of BINANCE_STREAMS or the BINANCE_WEBSOCKET_SECRET secret)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="T",
        help="first minute: ISO-8601 UTC or epoch ms (default: 24 h before --to)",
    )
    parser.add_argument(
        "--to", dest="end", metavar="T", help="end, exclusive (default: now; closed minutes only)"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="backfill the missing minutes through Kinesis, wait for the consumer, check again",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help="with --repair: longest wait for the consumer to write the repaired candles "
        f"(default {DEFAULT_WAIT_SECONDS:.0f})",
    )
    add_binance_arguments(parser)


def _symbols(raw: list[str]) -> tuple[str, ...]:
    from core.errors import ConfigError

    symbols = [s.strip().upper() for item in raw for s in item.split(",") if s.strip()]
    for symbol in symbols:
        if not symbol.isalnum():
            raise ConfigError(f"invalid --symbol (got {symbol!r}): expected a pair like BTCUSDT")
    if not symbols:
        raise ConfigError("invalid --symbol: no symbol given")
    return tuple(dict.fromkeys(symbols))


def _span(args: argparse.Namespace, now_ms: int) -> MinuteRange | None:
    """The closed minutes to check: --from..--to, else the last 24 hours."""
    from crypto_live.backfill.minutes import (
        MINUTES_PER_DAY,
        MS_PER_MINUTE,
        closed_part,
        last_day,
        parse_time_ms,
        requested_range,
    )

    if args.start is None and args.end is None:
        return last_day(now_ms)
    end = parse_time_ms(args.end, "--to") if args.end is not None else now_ms
    day = MINUTES_PER_DAY * MS_PER_MINUTE
    start = parse_time_ms(args.start, "--from") if args.start is not None else end - day
    span = requested_range(start, end)
    return closed_part(span, now_ms) if span is not None else None


def run(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from core.aws import AwsClients
    from core.errors import ConfigError
    from crypto_live.backfill.gaps import gap_lines
    from crypto_live.backfill.repair import find_gaps, subscribed_symbols
    from crypto_live.backfill.table import CandlesTable
    from crypto_live.commands.backfill import check_binance_options

    check_binance_options(args)
    if not args.wait >= 0:
        raise ConfigError(f"--wait must be >= 0 seconds, got {args.wait}")
    span = _span(args, time.time_ns() // 1_000_000)
    clients = AwsClients(settings)
    try:
        symbols = _symbols(args.symbols) if args.symbols else subscribed_symbols(settings, clients)
        if span is None:
            print("no closed minute opens in --from..--to; nothing to check")
            return 0
        table = CandlesTable(clients.dynamodb, settings.dynamo_candles_table_name)
        gaps = find_gaps(table, symbols, span)
        for line in gap_lines(gaps):
            print(line)
        if args.repair and any(g.missing for g in gaps):
            gaps = _repair(settings, clients, args, table, gaps)
    finally:
        clients.close()
    return GAPS_EXIT if any(g.missing for g in gaps) else 0


def _repair(
    settings: Settings,
    clients: AwsClients,
    args: argparse.Namespace,
    table: CandleKeys,
    gaps: list[SymbolGaps],
) -> list[SymbolGaps]:
    """Backfill every missing range, wait for the consumer, and check the span again."""
    from crypto_live.backfill.gaps import gap_lines, minute_count
    from crypto_live.backfill.progress import RichProgress
    from crypto_live.backfill.repair import find_gaps, wait_until_written
    from crypto_live.backfill.run import BackfillJob, run_backfill

    jobs = [BackfillJob(g.symbol, g.missing) for g in gaps if g.missing]
    with RichProgress(enabled=not args.no_progress) as progress:
        progress.phase("repair: backfill")
        summary = run_backfill(
            settings,
            clients,
            jobs,
            max_weight=args.max_weight,
            max_wait_seconds=args.max_wait,
            progress=progress,
        )
        print(f"repair: {summary.line()}")
        published = minute_count(r for ranges in summary.served.values() for r in ranges)
        progress.phase(f"repair: waiting for {settings.dynamo_candles_table_name}")
        left = wait_until_written(table, summary.served, args.wait, on_progress=progress.done)
    if left:
        print(
            f"repair: {minute_count(r for ranges in left.values() for r in ranges):,} of "
            f"{published:,} published candles not in {settings.dynamo_candles_table_name} after "
            f"{args.wait:.0f} s (is `crypto-live consume dynamodb` running?)"
        )
    after = find_gaps(table, [g.symbol for g in gaps], gaps[0].span)
    print("after repair:")
    for line in gap_lines(after):
        print(line)
    return after
