"""Bad input through the websocket is dead-lettered with its reason; a burst of 100k keeps
the producer's memory bounded."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.aws import AwsClients
from core.metrics import Counters
from core.settings import Settings
from tests.support.pipeline import (
    launch_producer,
    provisioned,
)
from tests.support.system import (
    SYMBOLS,
    ExchangeThread,
    as_record,
    comparable,
    dead_letters,
    envelope,
    payload,
    scrape,
    stream_records,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Bad:
    """A bad frame, the raw text its dead letter must hold, and a fragment of its reason."""

    frame: str
    raw: str
    reason: str


def bad_message(kind: int, index: int) -> Bad:
    """Fourteen kinds of bad input, each unique per ``index``."""
    symbol = SYMBOLS[index % len(SYMBOLS)]
    data = payload(index, symbol)

    def framed(value: Any, reason: str, stream: str = f"{symbol.lower()}@miniTicker") -> Bad:
        text = envelope(value, stream)
        return Bad(text, text, reason)

    match kind % 14:
        case 0:
            text = f'{{"stream":"{symbol.lower()}@miniTicker","data":{{"E":{index}'
            return Bad(text, text, "malformed JSON")
        case 1:
            return framed({**data, "c": 65000.5 + index}, "field 'c' must be a decimal string")
        case 2:
            return framed({**data, "E": f"soon-{index}"}, "field 'E' is not an integer")
        case 3:
            return framed({**data, "E": 10**17 + index}, "field 'E' out of range")
        case 4:
            return framed({**data, "v": "9" * 40 + str(index)}, "field 'v' is not a plain decimal")
        case 5:
            return framed({k: v for k, v in data.items() if k != "q"}, "missing field 'q'")
        case 6:
            return framed({**data, "e": "trade"}, "unknown event type 'trade'")
        case 7:
            return framed({**data, "s": "ETHBTC"}, "does not match stream symbol")
        case 8:
            text = json.dumps(["no", "envelope", index])
            return Bad(text, text, "message is not a JSON object")
        case 9:
            return framed(data, "unsupported stream", stream=f"{symbol.lower()}@trade")
        case 10:  # a JSON number too big for a float: parsed as inf
            text = envelope(data).replace(f'"c":"{data["c"]}"', f'"c":1e400,"x":{index}')
            return Bad(text, text, "field 'c' must be a decimal string, got number")
        case 11:
            return framed({**data, "l": f"-{index}.5"}, "field 'l' is not a plain decimal")
        case 12:
            return framed(None, "field 'data' is not an object: null")
    element = {**data, "e": "24hrTicker"}  # one bad element of an all-market array
    raw = json.dumps(element, separators=(",", ":"))
    return Bad(envelope([element], "!miniTicker@arr"), raw, "unknown event type '24hrTicker'")


@pytest.mark.timeout(180)
def test_bad_input_is_dead_lettered_and_a_burst_of_100k_keeps_memory_bounded(
    aws_settings: Settings, aws: AwsClients, tmp_path: Path
) -> None:
    settings = provisioned(aws_settings, aws, 2)
    good: list[dict[str, Any]] = []
    bad: list[Bad] = []

    def script(indexes: range, bad_every: int) -> list[str]:
        frames = []
        for index in indexes:
            if index % bad_every == bad_every - 1:
                bad.append(bad_message(index // bad_every, index))
                frames.append(bad[-1].frame)
            else:
                good.append(payload(index))
                frames.append(envelope(good[-1]))
        return frames

    # Phase A: every kind of bad input between good messages, 900 KiB frames (under
    # websockets' 1 MiB limit) of a huge decimal and of junk, and a mixed all-market array.
    phase_a = script(range(280), 2)
    huge = envelope({**payload(1_000, SYMBOLS[0]), "c": "1" * 900 * 1024})
    junk = "x" * 900 * 1024
    mixed = [payload(1_001, SYMBOLS[1]), {**payload(1_002, SYMBOLS[2]), "o": 7}, 42]
    phase_a += [huge, junk, envelope(mixed, "!miniTicker@arr")]
    good.append(mixed[0])
    bad += [
        Bad(huge, huge, "field 'c' is not a plain decimal"),
        Bad(junk, junk, "malformed JSON"),
        Bad("", json.dumps(mixed[1], separators=(",", ":")), "field 'o' must be a decimal string"),
        Bad("", "42", "array element is not a JSON object: number"),
    ]
    # Phase C: a burst of 100,000 messages, one in ten bad.
    burst = script(range(10_000, 110_000), 10)

    with (
        ExchangeThread() as exchange,
        launch_producer(settings, exchange.exchange.url, tmp_path / "producer.log") as producer,
    ):
        with RssSampler(producer.proc.pid) as rss:
            exchange.wait_for_connections(1)
            exchange.send(phase_a)
            # Phase B: a 2 MiB frame is over websockets' max_size (1 MiB): the client fails
            # the connection (1009) without reading it, so it cannot be a dead letter; the
            # producer logs it, reconnects and goes on. Frames still buffered in the client
            # then go down with the connection (as in any drop): phase A is read first.
            received = Counters.MESSAGES_RECEIVED
            until([producer], lambda: scrape(producer)[received] >= len(phase_a), 60)
            exchange.send(["[" + "7," * (1024 * 1024) + "7]"])
            exchange.wait_for_connections(2)
            started = time.monotonic()
            exchange.send(burst)
            until([producer], lambda: scrape(producer)[Counters.RECORDS_PUT] >= len(good), 120)
            burst_seconds = time.monotonic() - started
            until([producer], lambda: scrape(producer)[Counters.DEAD_LETTERS] >= len(bad), 60)
            scraped = scrape(producer)
        code = producer.terminate()

    print(
        f"\nburst of 100,000 messages: in Kinesis after {burst_seconds:.1f} s, producer peak "
        f"RSS {rss.peak_kib / 1024:.0f} MiB"
    )
    assert code == 0  # up all along (`until` checked), and a clean exit
    assert rss.peak_kib < 400 * 1024, f"producer RSS peaked at {rss.peak_kib / 1024:.0f} MiB"
    # Every good message in Kinesis exactly once, and nothing else.
    assert sorted(map(comparable, stream_records(aws, settings))) == sorted(map(as_record, good))
    # Every bad one among the dead letters, with its reason.
    letters = dead_letters(aws, settings, "producer")
    assert Counter(letter["raw"] for letter in letters) == Counter(item.raw for item in bad)
    reasons = {item.raw: item.reason for item in bad}
    wrong = [
        (d["reason"], reasons[d["raw"]]) for d in letters if reasons[d["raw"]] not in d["reason"]
    ]
    assert not wrong, wrong[:5]
    assert scraped[Counters.RECORDS_REJECTED] == len(bad)
    assert scraped[Counters.RECONNECTS] == 1
    assert any("1009" in m and "websocket event" in m for m in producer.messages())


class RssSampler:
    """Peak VmRSS (KiB) of a process, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                status = self._status.read_text()
            except OSError:
                return
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            if found:
                self.peak_kib = max(self.peak_kib, int(found.group(1)))
