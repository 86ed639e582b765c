"""The exchange drops the connection without a close frame: the producer reconnects and goes on."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from tests.support.exchange import ScriptedExchange
from tests.support.pipeline import (
    launch_producer,
    provisioned,
)
from tests.support.system import (
    ExchangeThread,
    envelope,
    payload,
    scrape,
    stream_records,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(120)
def test_dropped_websocket_reconnects_and_continues(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    before = [payload(i) for i in range(500)]
    batches = [[payload(i) for i in range(start, start + 20)] for start in range(1_000, 5_000, 20)]
    connections_at_send: list[int] = []

    async def feed(exchange: ScriptedExchange) -> None:
        for batch in batches:
            connections_at_send.append(exchange.connections_total)
            await exchange.send_script([envelope(data) for data in batch])
            await asyncio.sleep(0.02)

    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        exchange.wait_for_connections(1)
        exchange.send([envelope(data) for data in before])
        until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= 500, 30)
        feeding = exchange.spawn(feed(exchange.exchange))
        time.sleep(0.7)
        exchange.call(exchange.exchange.drop_connections())  # mid-stream, no close frame
        exchange.wait_for_connections(2)
        feeding.result(timeout=60)
        # Whatever was sent once the producer had reconnected must arrive.
        after = [
            data
            for batch, connections in zip(batches, connections_at_send, strict=True)
            if connections >= 2
            for data in batch
        ]
        assert len(after) >= 400, "too little was sent after the reconnection"
        wanted = {(data["s"], data["E"]) for data in before + after}
        until(
            [producer],
            lambda: (
                wanted <= {(r["symbol"], r["event_time"]) for r in stream_records(aws, settings)}
            ),
            30,
        )
        scraped = scrape(producer)
        code = producer.terminate()

    assert code == 0
    assert scraped[Counters.RECONNECTS] == 1
    assert any(m.startswith("reconnected after a gap of") for m in producer.messages())
    events = Counter((r["symbol"], r["event_time"]) for r in stream_records(aws, settings))
    assert max(events.values()) == 1  # nothing twice
    sent = {(data["s"], data["E"]) for data in before + [d for b in batches for d in b]}
    assert set(events) <= sent
    print(f"\nconnection dropped: {len(sent) - len(events)} messages sent in the gap were lost")
