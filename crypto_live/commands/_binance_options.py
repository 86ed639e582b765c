"""The Binance endpoint options of the commands that call its REST API (not a command itself:
``discover`` skips modules named with a leading underscore)."""

from __future__ import annotations

import argparse


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--testnet`` and ``--api-url``, overriding the TESTNET and BINANCE_API_URL settings."""
    parser.add_argument(
        "--testnet",
        dest="testnet",
        action="store_const",
        const=True,
        default=None,
        help="use Binance's spot testnet (overrides TESTNET)",
    )
    parser.add_argument(
        "--api-url", dest="binance_api_url", help="REST base URL (overrides BINANCE_API_URL)"
    )
