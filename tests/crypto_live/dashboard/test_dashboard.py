"""The live dashboard: its JSON API read from DynamoDB, and the page in a real headless Chromium
while the simulated exchange feeds the pipeline (exchange -> producer -> Kinesis -> consumer ->
DynamoDB, all real components, on moto over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumers.app import run_consumer
from consumers.dynamodb.candles import candle_item
from consumers.dynamodb.items import coalesce_latest, history_item
from consumers.dynamodb.writer import DynamoDbWriter
from consumers.engine.leases import DynamoLeaseStore
from core.aws import AwsClients
from core.health import Health, serve
from core.metrics import Counters, Metrics
from core.settings import Settings
from crypto_live.dashboard.candles import ApproximationBook
from crypto_live.dashboard.server import PLOTLY_PATH, DashboardServer, plotly_js
from crypto_live.dashboard.source import DashboardSource
from crypto_live.dashboard.views import (
    RateMeter,
    candle_ticks,
    change_pct,
    ticker_rows,
    totals_by_service,
)
from crypto_live.exchange.server import SimulatedExchange
from crypto_live.lake.candles import build_candles
from crypto_live.provision import provision
from producer.app import run_producer
from schemas.record import iso_timestamp
from tests.support.klines import kline_record
from tests.support.pipeline import ticker

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FAST = {"failover_seconds": 3, "shard_discovery_seconds": 1, "idle_time_between_reads_ms": 100}


# -- the API's pure parts ---------------------------------------------------------------------


def test_change_and_rows_from_dynamodb_items() -> None:
    assert change_pct("104", "100") == "4.00"
    assert change_pct("0.00002400", "0.00002500") == "-4.00"
    assert change_pct("1", "0") is None
    items = [
        {"symbol": {"S": "ETHUSDT"}, "close_price": {"N": "3500.5"}, "open_price": {"N": "3400"},
         "event_time": {"N": "1795392000123"}, "quote_volume": {"N": "1E+3"}},
        {"symbol": {"S": "BTCUSDT"}, "close_price": {"N": "65000"}, "event_time": {"N": "1"}},
        {"symbol": {"S": "BROKEN"}},
    ]  # fmt: skip
    rows = ticker_rows(items)
    assert [row["symbol"] for row in rows] == ["BTCUSDT", "ETHUSDT"]
    assert rows[1]["price"] == "3500.5" and rows[1]["change_pct"] == "2.96"
    assert rows[1]["event_time"] == 1795392000123 and rows[0]["change_pct"] is None
    assert iso_timestamp(1795392000123) == "2026-11-23T00:00:00.123Z"


def test_rates_from_metrics_scrapes() -> None:
    scrape = (
        "# TYPE crypto_live_records_consumed_total counter\n"
        'crypto_live_records_consumed_total{service="consumer-dynamodb"} 100.0\n'
        'crypto_live_records_consumed_total{service="producer"} 0.0\n'
        "# TYPE crypto_live_records_put_total counter\n"
        'crypto_live_records_put_total{service="producer"} 250.0\n'
        'crypto_live_records_put_total{service="consumer-dynamodb"} 0.0\n'
    )
    assert totals_by_service(scrape) == {"consumer-dynamodb": 100.0, "producer": 250.0}
    meter = RateMeter(window_seconds=10)
    assert meter.update(0.0, {"p": 0}) == {"p": None}
    assert meter.update(1.0, {"p": 30}) == {"p": 30.0}
    assert meter.update(2.0, {"p": 40}) == {"p": 20.0}  # over the window: (40 - 0) / 2
    # The window slid: measured from the newest reading at least 10 s old, (150 - 40) / 11.
    assert meter.update(13.0, {"p": 150}) == {"p": 10.0}
    assert meter.update(14.0, {"p": 5}) == {"p": None}  # restarted process: counter went back
    assert meter.update(15.0, {"p": 25}) == {"p": 20.0}


def history_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as the dashboard reads them back from the history table (low-level form)."""
    return [
        {
            "event_time": {"N": str(r["event_time"])},
            **{k: {"N": r[k]} for k in ("close_price", "base_volume", "quote_volume")},
        }
        for r in records
    ]


def test_candle_book_reads_only_what_can_change_and_equals_a_full_rebuild() -> None:
    minute = 60_000
    t0 = 1_795_392_000_000
    records = [
        {**ticker("BTCUSDT", t0 + i * 7_000, f"{100 + (i * 37) % 11}.5"), "base_volume": f"{i}"}
        for i in range(200)  # 23 minutes, 8 or 9 updates each
    ]
    reads: list[int] = []

    def read_since(since: int) -> list[dict[str, Any]]:
        reads.append(since)
        return history_items([r for r in records if since <= r["event_time"] <= clock])

    book = ApproximationBook("BTCUSDT")
    for clock in range(t0 + 30_000, t0 + 200 * 7_000, 45_000):  # a refresh every 45 s
        got = book.refresh(read_since, clock - 3 * 3_600_000, clock)
        full = build_candles("BTCUSDT", candle_ticks(read_since(0)))
        reads.pop()
        assert got == full, clock
        # After the first, a refresh reads from the start of the minute before the current one.
        if len(reads) > 1:
            assert reads[-1] >= (clock // minute - 2) * minute
    assert reads[0] == (t0 + 30_000 - 3 * 3_600_000) // minute * minute
    assert len(got) == len({r["event_time"] // minute for r in records if r["event_time"] <= clock})


# -- the API on DynamoDB ------------------------------------------------------------------------


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.integration
def test_api_answers_from_dynamodb(aws_settings: Settings, aws: AwsClients) -> None:
    provision(aws_settings, aws)
    now = time.time_ns() // 1_000_000
    records = [
        ticker(symbol, now - age_s * 1000, f"{100 + age_s}.50000000")
        for symbol in ("BTCUSDT", "ETHUSDT")
        for age_s in (7_200, 600, 30, 2)  # two hours ago: outside the chart's hour
    ]
    writer = DynamoDbWriter(
        aws.dynamodb,
        aws_settings.dynamo_table_name,
        aws_settings.dynamo_latest_table_name,
        Metrics("consumer-dynamodb"),
    )
    try:
        writer.write_history([history_item(r, 1) for r in records])
        writer.update_latest(coalesce_latest(records))
    finally:
        writer.close()
    leases = DynamoLeaseStore(aws.dynamodb, "crypto-live-dynamodb-leases")
    leases.ensure_table()
    leases.create("shardId-000000000000", (), "TRIM_HORIZON")
    (lease,) = leases.list_leases()
    leases.renew(leases.take(lease, "worker-1"), millis_behind=1_234)
    consumer = Metrics("consumer-dynamodb")
    with (
        serve([consumer], Health(), 0, "127.0.0.1") as metrics_server,
        DashboardServer(
            DashboardSource(
                aws_settings,
                aws.dynamodb,
                [f"http://127.0.0.1:{metrics_server.port if metrics_server else 0}/metrics"],
                cache_seconds=0.2,
            ),
            "127.0.0.1",
            0,
        ) as dashboard,
    ):
        base = dashboard.url
        status, latest = get_json(base + "api/latest")
        assert status == 200
        assert [(t["symbol"], t["price"], t["change_pct"]) for t in latest["tickers"]] == [
            ("BTCUSDT", "102.50000000", "2.50"),
            ("ETHUSDT", "102.50000000", "2.50"),
        ]
        assert 1_000 <= latest["now_ms"] - latest["tickers"][0]["event_time"] < 60_000
        status, history = get_json(base + "api/history?symbol=ethusdt&minutes=60")
        assert status == 200
        assert [p[1] for p in history["points"]] == ["700.50000000", "130.50000000", "102.50000000"]
        after = history["points"][1][0]
        _, newer = get_json(base + f"api/history?symbol=ETHUSDT&after={after}")
        assert [p[1] for p in newer["points"]] == ["102.50000000"]

        _, first = get_json(base + "api/pipeline")
        consumer.inc(Counters.RECORDS_CONSUMED, 50)
        time.sleep(1.0)
        _, pipeline = get_json(base + "api/pipeline")
        groups = {g["kind"]: g for g in pipeline["groups"]}
        (shard,) = groups["dynamodb"]["shards"]
        assert (shard["owner"], shard["millis_behind"]) == ("worker-1", 1_234)
        assert groups["dynamodb"]["max_millis_behind"] == 1_234
        assert groups["s3"]["shards"] == []  # that group never ran: no lease table
        assert first["groups"][0]["records_per_second"] is None  # one reading: no rate yet
        assert 10 < groups["dynamodb"]["records_per_second"] <= 50 / 1.0

        assert get_json(base + "api/history?symbol=BTC/../x")[0] == 400
        assert get_json(base + "api/nothing")[0] == 404
        with urllib.request.urlopen(base, timeout=10) as page:
            html = page.read().decode()
            assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert '<div id="chart"' in html and "/app.js" in html and PLOTLY_PATH in html
        request = urllib.request.Request(base + PLOTLY_PATH.lstrip("/"))
        request.add_header("Accept-Encoding", "gzip")
        with urllib.request.urlopen(request, timeout=10) as script:
            assert script.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(script.read()) == plotly_js()[0]
        status, candles = get_json(base + "api/candles?symbol=ETHUSDT&hours=3")
        assert status == 200 and candles["hours"] == 3
        closes = [c["close"] for c in candles["candles"]]  # one update per minute at most here
        assert closes[:2] == ["7300.50000000", "700.50000000"] and closes[-1] == "102.50000000"
        assert get_json(base + "api/candles?symbol=ETH-USD")[0] == 400


# -- the page in a real browser -----------------------------------------------------------------


class Pipeline:
    """Simulated exchange -> producer -> Kinesis -> DynamoDB consumer, on a background loop."""

    def __init__(self, settings: Settings, symbols: int) -> None:
        self._settings = settings
        self._symbols = symbols
        self.metrics = {"producer": Metrics("producer"), "dynamodb": Metrics("consumer-dynamodb")}
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as err:
            self._error = err
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with SimulatedExchange(port=0, symbols=self._symbols, rate_hz=2, seed=7) as exchange:
            settings = self._settings.with_overrides(
                binance_stream_url=exchange.url, binance_streams=("!miniTicker@arr",)
            )
            services = [
                run_producer(settings, self._stop, self.metrics["producer"]),
                run_consumer(settings, "dynamodb", self._stop, self.metrics["dynamodb"]),
            ]
            await asyncio.gather(*services)

    def __enter__(self) -> Pipeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while self._stop is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        if self._error is not None:
            raise self._error


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium driven by Selenium, or a skip saying what is missing."""
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip(
            f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


# The candlestick trace's boxes (plotly draws one path.box per candle) and the plot's width.
CANDLE_BOXES = """
const chart = document.getElementById('chart');
const plot = chart.querySelector('.nsewdrag');
const boxes = Array.from(chart.querySelectorAll('g.trace.boxes path.box')).map((p) => {
  const box = p.getBBox();
  return [box.x + box.width / 2, box.width, box.height];
});
return {plot_width: plot ? plot.getBBox().width : 0, boxes: boxes,
        paths: chart.querySelectorAll('g.trace path').length};
"""
SEEDED = "SEEDUSDT"
SEEDED_MINUTES = 90


def seeded_kline(open_time: int, m: int) -> dict[str, Any]:
    """The closed kline of SEEDUSDT's minute ``m``: other prices than its updates', and trades."""
    return kline_record(
        SEEDED,
        open_time,
        open_time + 60_000,
        first_trade_id=100 * m,
        last_trade_id=100 * m + 999 + m,
        open_price=f"{100 + m}.25000000",
        close_price=f"{102 + m}.75000000",
        high_price=f"{103 + m}.00000000",
        low_price=f"{99 + m}.50000000",
        base_volume=f"{m}.5",
        quote_volume=f"{m * 100}.5",
        trades=1_000 + m,
        closed=True,
        taker_buy_base_volume="0",
        taker_buy_quote_volume="0",
        source="websocket",
        received_at=(open_time + 60_000) * 1000,
    )


def seed_history(settings: Settings, aws: AwsClients) -> dict[int, dict[str, Any] | None]:
    """SEEDED_MINUTES whole minutes of SEEDUSDT ending a minute ago, four updates each, and
    the closed klines of all but every tenth minute (missed) and the last (not in yet); by
    open time, each minute's kline or None."""
    minute = 60_000
    first = (time.time_ns() // 1_000_000 // minute - SEEDED_MINUTES) * minute
    records = [
        ticker(SEEDED, first + m * minute + s * 1000, f"{100 + m + (s % 3)}.{s:02d}000000")
        for m in range(SEEDED_MINUTES)
        for s in (5, 20, 35, 50)
    ]
    klines = {
        first + m * minute: None
        if m % 10 == 3 or m == SEEDED_MINUTES - 1
        else seeded_kline(first + m * minute, m)
        for m in range(SEEDED_MINUTES)
    }
    writer = DynamoDbWriter(
        aws.dynamodb,
        settings.dynamo_table_name,
        settings.dynamo_latest_table_name,
        Metrics("consumer-dynamodb"),
        candles_table=settings.dynamo_candles_table_name,
    )
    try:
        writer.write_history([history_item(r, 1) for r in records])
        writer.update_latest(coalesce_latest(records))
        writer.write_candles([candle_item(k) for k in klines.values() if k is not None])
    finally:
        writer.close()
    return klines


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_browser_table_fills_and_chart_draws_while_the_pipeline_runs(
    aws_settings: Settings, aws: AwsClients, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    settings = aws_settings.with_overrides(**FAST)
    provision(settings, aws)
    seeded_klines = seed_history(settings, aws)
    symbols = 6
    with (
        Pipeline(settings, symbols) as pipeline,
        serve(list(pipeline.metrics.values()), Health(), 0, "127.0.0.1") as metrics,
        DashboardServer(
            DashboardSource(
                settings,
                aws.dynamodb,
                [f"http://127.0.0.1:{metrics.port if metrics else 0}/metrics"],
            ),
            "127.0.0.1",
            0,
        ) as dashboard,
    ):
        chromium.get(dashboard.url)
        chromium.execute_script("window.__notReloaded = true;")
        rows = wait_for(
            lambda: (
                len(chromium.find_elements(By.CSS_SELECTOR, "#tickers tbody tr")) == symbols + 1
            ),
            90,
            "the table to fill",
        )
        assert rows
        first = chromium.find_elements(By.CSS_SELECTOR, "#tickers tbody tr")[0]
        symbol = first.get_attribute("data-symbol")
        chart = chromium.find_element(By.ID, "chart")
        wait_for(lambda: int(chart.get_attribute("data-candles")) >= 1, 60, "live candles")
        assert chart.get_attribute("data-symbol") == symbol
        wait_for(
            lambda: (
                len(chromium.execute_script(CANDLE_BOXES)["boxes"])
                == int(chart.get_attribute("data-candles"))
            ),
            10,
            "a box per live candle",
        )

        # Updating every second, without reloading the page.
        def updates() -> int:
            return int(chromium.find_element(By.TAG_NAME, "body").get_attribute("data-updates"))

        seen, last = updates(), chart.get_attribute("data-last")
        started = time.monotonic()
        wait_for(lambda: updates() >= seen + 3, 15, "three more refreshes")
        assert time.monotonic() - started < 8  # about one a second
        wait_for(lambda: chart.get_attribute("data-last") != last, 10, "the live candle to move")
        assert chromium.execute_script("return window.__notReloaded === true;")
        price = first.find_elements(By.TAG_NAME, "td")[1].text
        assert Decimal(price.replace(",", "")) > 0

        # The seeded symbol: exactly one candle per minute of its history, each its own box.
        seeded = chromium.find_element(By.CSS_SELECTOR, f"#tickers tr[data-symbol={SEEDED}]")
        seeded.click()
        wait_for(
            lambda: (
                chart.get_attribute("data-symbol") == SEEDED
                and int(chart.get_attribute("data-candles")) == SEEDED_MINUTES
                and len(chromium.execute_script(CANDLE_BOXES)["boxes"]) == SEEDED_MINUTES
            ),
            20,
            f"{SEEDED_MINUTES} candles of {SEEDED}",
        )
        drawn = chromium.execute_script(CANDLE_BOXES)
        centres = [box[0] for box in drawn["boxes"]]
        assert centres == sorted(centres) and len(set(centres)) == SEEDED_MINUTES
        slot = drawn["plot_width"] / SEEDED_MINUTES
        # Nothing spans the plot: no path of the chart is wider than one candle's slot.
        assert max(box[1] for box in drawn["boxes"]) <= slot
        assert all(box[2] > 0 for box in drawn["boxes"])  # open != close: a visible body
        assert drawn["paths"] == SEEDED_MINUTES  # every path of the trace is one candle
        widest = chromium.execute_script(
            "return Math.max(...Array.from(document.querySelectorAll("
            "'#chart g.trace path')).map((p) => p.getBBox().width));"
        )
        assert widest <= slot, (widest, slot)
        # Minutes with a closed kline are drawn from it (its prices, its trades on hover); the
        # others (missed, not in yet) from the miniTicker updates.
        trace = chromium.execute_script(
            "const t = document.getElementById('chart').data[0];"
            "return {open: t.open, close: t.close, text: t.text};"
        )
        klines = [seeded_klines[when] for when in sorted(seeded_klines)]
        assert trace["text"] == [
            f"{k['trades']:,} trades" if k else "approximated from miniTicker" for k in klines
        ]
        for m, (k, opened, closed) in enumerate(
            zip(klines, trace["open"], trace["close"], strict=True)
        ):
            if k is not None:
                assert (opened, closed) == (float(k["open_price"]), float(k["close_price"])), m
            else:  # the minute's first and last update (at 5 s and 50 s)
                assert (opened, closed) == (float(f"{102 + m}.05"), float(f"{102 + m}.50")), m
        chromium.save_screenshot(str(tmp_path / "candles.png"))

        # The pipeline panel: the DynamoDB group's shards and its records/s.
        shards = chromium.find_elements(By.CSS_SELECTOR, "[data-group=dynamodb] tr[data-shard]")
        assert len(shards) == settings.kinesis_shard_count
        wait_for(
            lambda: (
                chromium.find_element(By.CSS_SELECTOR, "[data-group=dynamodb] .figure b").text
                not in ("", "\u2013", "0.0")
            ),
            30,
            "records/s of the DynamoDB consumer",
        )

        # Another symbol: click its row, the chart follows.
        other = chromium.find_elements(By.CSS_SELECTOR, "#tickers tbody tr")[2]
        other_symbol = other.get_attribute("data-symbol")
        other.click()
        wait_for(
            lambda: (
                chart.get_attribute("data-symbol") == other_symbol
                and int(chart.get_attribute("data-candles")) >= 1
            ),
            20,
            "the chart of the clicked symbol",
        )
        assert "selected" in (other.get_attribute("class") or "")
        chromium.save_screenshot(str(tmp_path / "dashboard.png"))
        if target := os.environ.get("CRYPTO_LIVE_DASHBOARD_SCREENSHOT"):
            chromium.save_screenshot(target)
    assert pipeline.metrics["dynamodb"].value(Counters.RECORDS_CONSUMED) > 0
