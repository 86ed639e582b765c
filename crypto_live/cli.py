"""`crypto-live` command line: one entry point for every service and operation."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from core.errors import ConfigError, CryptoLiveError, SourceUnavailableError
from core.logs import configure_logging
from core.settings import Settings, load_settings
from crypto_live.commands import discover

log = logging.getLogger(__name__)

# CLI flag -> settings field; flags mirror the env vars of DESIGN.md.
COMMON_FLAGS: dict[str, str] = {
    "--endpoint-url": "aws_endpoint_url",
    "--region": "aws_region",
    "--stream-name": "kinesis_stream_name",
    "--shard-count": "kinesis_shard_count",
    "--streams": "binance_streams",
    "--stream-url": "binance_stream_url",
    "--log-level": "log_level",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for flag, field in COMMON_FLAGS.items():
        common.add_argument(flag, dest=field, default=None, help=f"overrides {field.upper()}")
    parser = argparse.ArgumentParser(
        prog="crypto-live", description="Binance miniTicker -> Kinesis -> DynamoDB and S3"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", parents=[common], help="run the whole system on one machine")
    up.add_argument("--source", choices=("binance", "sim"), default="binance")
    up.add_argument("--no-display", action="store_true", help="log lines instead of a live table")
    commands.add_parser("provision", parents=[common], help="create stream, tables, bucket, secret")
    commands.add_parser("producer", parents=[common], help="run the producer service")
    consume = commands.add_parser(
        "consume", parents=[common], help="run one worker of a consumer group"
    )
    consume.add_argument("kind", choices=("dynamodb", "s3"))
    consume.add_argument("--app-name", dest="consumer_app_name")
    consume.add_argument("--initial-position", dest="initial_position")
    exchange = commands.add_parser(
        "exchange", parents=[common], help="run the simulated Binance websocket server"
    )
    exchange.add_argument("--host", dest="exchange_host")
    exchange.add_argument("--port", dest="exchange_port", type=int)
    exchange.add_argument("--symbols", dest="exchange_symbols", type=int)
    exchange.add_argument("--rate", dest="exchange_rate_hz", type=float)
    for name, command in discover().items():
        command.add_arguments(commands.add_parser(name, parents=[common], help=command.HELP))
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in Settings.model_fields
    }
    return load_settings(**overrides)


def run_until_signalled(
    main: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
) -> Any:
    """Run ``main(stop)``; SIGINT and SIGTERM set ``stop`` so it can finish cleanly."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


def _provision(settings: Settings) -> int:
    from core.aws import AwsClients
    from crypto_live.provision import provision

    clients = AwsClients(settings)
    try:
        report = provision(settings, clients)
    finally:
        clients.close()
    print(f"created: {', '.join(report.created) or 'nothing'}")
    print(f"already there: {', '.join(report.existing) or 'nothing'}")
    return 0


def _producer(settings: Settings) -> int:
    from core.health import Health, serve_service
    from core.heap import freeze_startup_heap
    from core.metrics import Metrics
    from producer.app import run_producer

    metrics, health = Metrics("producer"), Health()
    with serve_service(settings, "producer", [metrics], health):
        summary = run_until_signalled(
            lambda stop: run_producer(settings, stop, metrics, health, freeze_startup_heap)
        )
    log.info("producer stopped: %s", summary)
    return int(summary.exit_code)  # 0, or 1/3/4: see README "Exit codes"


def _consume(settings: Settings, kind: str) -> int:
    from consumers.app import ConsumerKind, run_consumer
    from core.health import Health, serve_service
    from core.heap import freeze_startup_heap
    from core.metrics import Metrics

    consumer_kind = cast(ConsumerKind, kind)
    metrics, health = Metrics(f"consumer-{kind}"), Health()
    with serve_service(settings, f"consumer-{kind}", [metrics], health):
        summary = run_until_signalled(
            lambda stop: run_consumer(
                settings, consumer_kind, stop, metrics, health, freeze_startup_heap
            )
        )
    log.info("consumer stopped: %s", summary)
    return 0


def _exchange(settings: Settings) -> int:
    from crypto_live.exchange.server import serve_forever

    run_until_signalled(
        lambda stop: serve_forever(
            settings.exchange_host,
            settings.exchange_port,
            settings.exchange_symbols,
            settings.exchange_rate_hz,
            stop,
            max_connection_seconds=settings.exchange_max_connection_seconds,
            close_after_frames=settings.exchange_close_after_frames,
            weight_limit=settings.exchange_weight_limit,
        )
    )
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from crypto_live.up import run_up

    return run_up(settings, source=args.source, display=not args.no_display)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crypto-live`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as err:
        print(f"crypto-live: {err}", file=sys.stderr)
        return 2
    if args.command != "up":
        service = f"consumer-{args.kind}" if args.command == "consume" else args.command
        configure_logging(service, settings.log_level)
    try:
        if args.command == "provision":
            return _provision(settings)
        if args.command == "producer":
            return _producer(settings)
        if args.command == "exchange":
            return _exchange(settings)
        if args.command == "consume":
            return _consume(settings, args.kind)
        if args.command != "up":
            return discover()[args.command].run(settings, args)
        return _up(settings, args)
    except ConfigError as err:
        print(f"crypto-live: {err}", file=sys.stderr)
        return 2
    except SourceUnavailableError as err:
        hint = " (offline? try `make up SOURCE=sim`)" if args.command == "up" else ""
        print(f"crypto-live: {err}{hint}", file=sys.stderr)
        return 1
    except CryptoLiveError as err:
        print(f"crypto-live: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
