"""`crypto-live up`'s terminal: warnings as one line above the table, a clear line without moto."""

from __future__ import annotations

import importlib.util
import io
import logging
from importlib.machinery import ModuleSpec

import pytest
from rich.console import Console

from crypto_live import embedded
from crypto_live.cli import main
from crypto_live.up import SIM_KLINE_SYMBOLS, ConsoleLineHandler, sim_streams


def test_console_line_handler_shows_warnings_and_errors_only_one_line_each() -> None:
    out = io.StringIO()
    console = Console(file=out, width=70, color_system=None)
    logger = logging.getLogger("tests.up.console")
    logger.propagate = False
    handler = ConsoleLineHandler(console)
    logger.addHandler(handler)
    try:
        logger.info("routine progress")
        logger.warning("reconnecting after %s", "a close " * 20)
        logger.error("sink failed\nsecond line")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "WARNING tests.up.console: reconnecting after a" in lines[0]
    assert len(lines[0]) <= 70 and lines[0].endswith("…")
    assert lines[1].endswith("ERROR tests.up.console: sink failed second line")


def test_up_without_moto_says_how_to_install_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "moto" else real(name, package)

    monkeypatch.setattr(embedded.importlib.util, "find_spec", find_spec)
    assert main(["up", "--source", "sim"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "crypto-live: the embedded AWS endpoint needs moto: pip install 'crypto-live[embedded]' "
        "(or set AWS_ENDPOINT_URL to LocalStack or AWS)"
    ]


def test_sim_streams_are_the_all_market_tickers_and_each_symbols_klines() -> None:
    assert sim_streams(["BTCUSDT", "SYM0001USDT"]) == (
        "!miniTicker@arr",
        "btcusdt@kline_1m",
        "sym0001usdt@kline_1m",
    )
    many = sim_streams([f"SYM{i:04d}USDT" for i in range(5000)])
    assert len(many) == 1 + SIM_KLINE_SYMBOLS
    assert len("/".join(many)) < 8192 - 100  # the request line websockets accepts
