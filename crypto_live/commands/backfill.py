"""`crypto-live backfill klines`: Binance's REST 1-minute klines of a range, through Kinesis."""

from __future__ import annotations

import argparse

from core.settings import Settings
from crypto_live.commands._binance_options import add_endpoint_arguments

NAME = "backfill"
HELP = "fetch 1-minute klines over REST (python-binance) and publish them through Kinesis"


def add_binance_arguments(parser: argparse.ArgumentParser) -> None:
    """The REST options `backfill klines` and `candles gaps --repair` share."""
    from crypto_live.backfill.fetch import DEFAULT_MAX_WAIT_SECONDS
    from crypto_live.backfill.pacing import BINANCE_WEIGHT_LIMIT, DEFAULT_MAX_WEIGHT

    parser.add_argument(
        "--max-weight",
        type=int,
        default=DEFAULT_MAX_WEIGHT,
        metavar="N",
        help="request weight per minute to stay under, read from X-MBX-USED-WEIGHT-1M "
        f"(default {DEFAULT_MAX_WEIGHT:,}; Binance allows {BINANCE_WEIGHT_LIMIT:,})",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT_SECONDS,
        metavar="SECONDS",
        help="longest Retry-After of a 429/418 to wait out; a longer one stops the run "
        f"(default {DEFAULT_MAX_WAIT_SECONDS:.0f})",
    )
    add_endpoint_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("klines",), help="1-minute klines")
    parser.add_argument("--symbol", required=True, help="the pair, e.g. BTCUSDT")
    parser.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="T",
        help="first minute: ISO-8601 UTC (2026-11-23T00:00Z) or epoch ms",
    )
    parser.add_argument(
        "--to", dest="end", required=True, metavar="T", help="end, exclusive (same forms)"
    )
    add_binance_arguments(parser)


def check_binance_options(args: argparse.Namespace) -> None:
    """ConfigError for an impossible --max-weight or --max-wait."""
    from core.errors import ConfigError
    from crypto_live.backfill.pacing import KLINES_WEIGHT

    if args.max_weight < KLINES_WEIGHT:
        raise ConfigError(
            f"--max-weight must be at least {KLINES_WEIGHT} (one klines request), "
            f"got {args.max_weight}"
        )
    if not args.max_wait >= 0:
        raise ConfigError(f"--max-wait must be >= 0 seconds, got {args.max_wait}")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from core.aws import AwsClients
    from core.errors import ConfigError
    from crypto_live.backfill.minutes import parse_time_ms, requested_range
    from crypto_live.backfill.progress import RichProgress
    from crypto_live.backfill.run import BackfillJob, run_backfill

    check_binance_options(args)
    symbol = args.symbol.strip().upper()
    if not symbol.isalnum():
        raise ConfigError(f"invalid --symbol (got {args.symbol!r}): expected a pair like BTCUSDT")
    span = requested_range(parse_time_ms(args.start, "--from"), parse_time_ms(args.end, "--to"))
    if span is None:
        print(f"backfill {symbol}: no whole minute opens in --from..--to; nothing to fetch")
        return 0
    clients = AwsClients(settings)
    try:
        with RichProgress(enabled=not args.no_progress) as progress:
            progress.phase(f"backfill {symbol}")
            summary = run_backfill(
                settings,
                clients,
                [BackfillJob(symbol, (span,))],
                max_weight=args.max_weight,
                max_wait_seconds=args.max_wait,
                progress=progress,
            )
    finally:
        clients.close()
    later = span.minutes - summary.wanted
    tail = f"; {later:,} minutes not closed yet (left to the websocket)" if later > 0 else ""
    print(f"backfill {symbol} {span.bounds()}: {summary.line()}{tail}")
    return 0
