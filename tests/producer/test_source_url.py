"""Which websocket URL the source connects to: Binance's, its testnet's, or the one set."""

from __future__ import annotations

from binance.ws.streams import BinanceSocketManager

from core.metrics import Metrics
from core.settings import DEFAULT_BINANCE_STREAM_URL
from producer.source import BinanceSource


def test_testnet_switches_the_default_url_and_leaves_a_set_one_alone() -> None:
    metrics = Metrics("producer")
    streams = ["btcusdt@miniTicker"]
    live = BinanceSource(streams, metrics)
    testnet = BinanceSource(streams, metrics, testnet=True)
    local = BinanceSource(streams, metrics, url="ws://127.0.0.1:9443", testnet=True)
    assert live._base == DEFAULT_BINANCE_STREAM_URL
    assert testnet._base == BinanceSocketManager.STREAM_TESTNET_URL.rstrip("/") + "/"
    assert testnet._base != live._base
    assert local._base == "ws://127.0.0.1:9443/"
