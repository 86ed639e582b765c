"""Simulated Binance exchange: miniTicker streams from a seeded random walk, 1-minute kline
streams and the REST side from deterministic trades, served locally."""

from crypto_live.exchange.price_walk import MarketSimulator, MiniTickerPayload, generate_symbols
from crypto_live.exchange.server import (
    ALL_MARKET_STREAM,
    ExchangeError,
    SimulatedExchange,
    serve_forever,
)

__all__ = [
    "ALL_MARKET_STREAM",
    "ExchangeError",
    "MarketSimulator",
    "MiniTickerPayload",
    "SimulatedExchange",
    "generate_symbols",
    "serve_forever",
]
