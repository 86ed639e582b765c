"""The producer's websocket edge, as a process against a real local websocket server:
a clean server close loses no frame and reconnects at once, a planned rotation before the
connection lifetime leaves no gap and no duplicate, and /healthz tells when the socket is down.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from crypto_live.exchange.server import SimulatedExchange
from tests.support.emulator import free_port
from tests.support.pipeline import (
    ServiceProcess,
    launch_producer,
    producer_env,
    provisioned,
    wait_until,
)
from tests.support.system import (
    ExchangeThread,
    as_record,
    comparable,
    envelope,
    payload,
    scrape,
    stream_records,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_GAP = re.compile(r"reconnected after a gap of (\d+) ms")


def reconnect_gaps_ms(producer: ServiceProcess) -> list[int]:
    """Every reconnect gap the producer logged."""
    return [int(m.group(1)) for line in producer.messages() if (m := _GAP.match(line))]


@pytest.mark.timeout(120)
def test_burst_then_clean_close_loses_nothing_and_reconnects_within_a_second(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    burst = [payload(i) for i in range(5_000)]
    after = [payload(i) for i in range(10_000, 10_500)]
    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        exchange.wait_for_connections(1)
        exchange.send([envelope(data) for data in burst])
        # A close frame right behind the last data frame, as Binance at its 24 h limit.
        exchange.call(exchange.exchange.close_connections(1000, "maintenance"))
        closed_at = time.monotonic()
        exchange.wait_for_connections(2, timeout=10)
        reconnect_seconds = time.monotonic() - closed_at
        exchange.send([envelope(data) for data in after])
        wanted = len(burst) + len(after)
        until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= wanted, 60)
        scraped = scrape(producer)
        code = producer.terminate()

    print(f"\nreconnect after a clean close: {reconnect_seconds * 1000:.0f} ms")
    assert code == 0
    records = stream_records(aws, settings)
    assert sorted(map(comparable, records)) == sorted(map(as_record, burst + after))
    assert reconnect_seconds <= 1.0
    gaps = reconnect_gaps_ms(producer)
    assert len(gaps) == 1 and gaps[0] <= 1000, gaps
    assert scraped[Counters.RECONNECTS] == 1
    assert scraped["crypto_live_source_reconnect_gap_seconds_count"] == 1
    assert any("closed by the server (code 1000: maintenance)" in m for m in producer.messages())


@pytest.mark.timeout(180)
def test_rotation_before_the_connection_lifetime_leaves_no_gap_and_no_duplicate(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    """12 s connection lifetime, rotation every 6 s, 30 s at 200 frames/s (20 symbol streams at
    10 Hz): the 24 h and 23 h of Binance and BINANCE_ROTATE_HOURS, scaled down."""
    settings = provisioned(aws_settings, aws, 2)
    run_seconds, interval = 30.0, 0.1
    ticks: list[int] = []

    async def market(exchange: SimulatedExchange) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        end = next_at + run_seconds
        while loop.time() < end:
            now_ms = time.time_ns() // 1_000_000
            exchange.tick(now_ms)
            ticks.append(now_ms)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    with ExchangeThread(max_connection_seconds=12.0) as exchange:
        symbols = exchange.exchange.simulator.symbols
        env = producer_env(settings, exchange.exchange.url, settings.aws_endpoint_url or "")
        env["BINANCE_STREAMS"] = ",".join(f"{s.lower()}@miniTicker" for s in symbols)
        env["BINANCE_ROTATE_HOURS"] = str(6 / 3600)  # rotate at 6 s, well before the server's 12 s
        with ServiceProcess(["producer"], env, tmp_path / "producer.log") as producer:
            exchange.wait_for_connections(1)
            exchange.spawn(market(exchange.exchange)).result(timeout=run_seconds + 30)
            wanted = len(ticks) * len(symbols)
            until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= wanted, 60)
            scraped = scrape(producer)
            code = producer.terminate()
        closed_by_server = exchange.exchange.connections_closed
        connections = exchange.exchange.connections_total

    assert code == 0
    events = Counter((r["symbol"], r["event_time"]) for r in stream_records(aws, settings))
    expected = Counter((symbol, at) for at in ticks for symbol in symbols)
    missing, duplicated = expected - events, events - expected
    print(
        f"\n{len(ticks)} ticks x {len(symbols)} streams, {connections} connections, "
        f"{int(scraped[Counters.ROTATIONS])} rotations, "
        f"{int(scraped[Counters.OVERLAP_DUPLICATES])} overlap duplicates dropped; "
        f"missing {sum(missing.values())}, duplicated {sum(duplicated.values())}"
    )
    assert not missing and not duplicated
    by_symbol: dict[str, list[int]] = defaultdict(list)
    for symbol, at in events:
        by_symbol[symbol].append(at)
    worst_gap = max(
        later - earlier
        for times in map(sorted, by_symbol.values())
        for earlier, later in itertools.pairwise(times)
    )
    assert worst_gap <= 1000, worst_gap
    # The producer rotated on its own (every 6 s of a 30 s run), so the server never had to
    # close a connection on it, and no reconnect happened.
    assert scraped[Counters.ROTATIONS] >= 4
    assert scraped[Counters.OVERLAP_DUPLICATES] > 0  # the overlap was real
    assert closed_by_server == 0
    assert scraped[Counters.RECONNECTS] == 0


@pytest.mark.timeout(120)
def test_server_lifetime_and_frame_limit_reconnect_at_once(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    """Without a rotation in time, the server's close frame is followed by an immediate
    reconnect; the frame-limit mode closes mid-stream and nothing read is lost."""
    settings = provisioned(aws_settings, aws, 2)
    with ExchangeThread(close_after_frames=700) as exchange:
        with launch_producer(
            settings, exchange.exchange.url, tmp_path / "producer.log"
        ) as producer:
            sent = []
            for round_ in range(5):
                exchange.wait_for_connections(round_ + 1, timeout=10)
                batch = [payload(i) for i in range(round_ * 700, (round_ + 1) * 700)]
                exchange.send([envelope(data) for data in batch])
                sent += batch
            exchange.wait_for_connections(6, timeout=10)
            until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= len(sent), 60)
            scraped = scrape(producer)
            code = producer.terminate()
        assert exchange.exchange.connections_closed >= 5
    assert code == 0
    assert sorted(map(comparable, stream_records(aws, settings))) == sorted(map(as_record, sent))
    gaps = reconnect_gaps_ms(producer)
    assert len(gaps) == 5 and max(gaps) <= 1000, gaps
    assert scraped[Counters.RECONNECTS] == 5


def healthz(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.timeout(120)
def test_healthz_is_unhealthy_while_the_websocket_is_down(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    port = free_port("127.0.0.1")
    exchange = ExchangeThread(port=port)
    with exchange:
        env = producer_env(settings, exchange.exchange.url, settings.aws_endpoint_url or "")
        env["BINANCE_DOWN_UNHEALTHY_SECONDS"] = "2"
        with ServiceProcess(["producer"], env, tmp_path / "producer.log") as producer:
            exchange.wait_for_connections(1)
            url = producer.base_url()
            assert healthz(url)[0] == 200
            exchange.call(exchange.exchange.stop())  # the server goes away: nothing to reconnect to
            wait_until(lambda: healthz(url)[0] == 503, 30, 0.2)
            assert "websocket" in str(healthz(url)[1])
            exchange.call(exchange.exchange.start())  # back, on the same port
            wait_until(lambda: healthz(url)[0] == 200, 60, 0.2)
            assert producer.proc.poll() is None
            assert producer.terminate() == 0
    failed = [m for m in producer.messages() if m.startswith("websocket connect failed")]
    assert failed and "next attempt in" in failed[0]


@pytest.mark.timeout(120)
def test_sigterm_right_after_a_burst_hands_on_every_frame_on_the_wire(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    """At SIGTERM the producer closes the socket and still reads what the server sent before
    it saw the close frame: those frames were delivered, so they reach Kinesis."""
    settings = provisioned(aws_settings, aws, 2)
    burst = [payload(i) for i in range(5_000)]
    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        exchange.wait_for_connections(1)
        exchange.send([envelope(data) for data in burst])
        code = producer.terminate()
    assert code == 0
    records = stream_records(aws, settings)
    assert sorted(map(comparable, records)) == sorted(map(as_record, burst))
