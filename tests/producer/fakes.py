"""In-memory fakes for the producer's unit tests: a Kinesis StreamWriter and a MessageSource."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from producer.aggregation import PutEntry
from producer.shard_map import ShardMap

MAX_HASH = 2**128 - 1
BASE_TIME_MS = 1_795_000_000_000

Answer = Callable[[int, Sequence[PutEntry]], dict[str, Any]]


def shard_map(count: int = 2, prefix: str = "shardId-") -> ShardMap:
    step = (MAX_HASH + 1) // count
    return ShardMap.from_list_shards(
        [
            {
                "ShardId": f"{prefix}{i}",
                "HashKeyRange": {
                    "StartingHashKey": str(i * step),
                    "EndingHashKey": str(MAX_HASH if i == count - 1 else (i + 1) * step - 1),
                },
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }
            for i in range(count)
        ]
    )


def accepted(
    entries: Sequence[PutEntry], shard_of: Callable[[PutEntry], str] | None = None
) -> dict[str, Any]:
    """A PutRecords response storing every entry (in ``shard_of(entry)``, default its own)."""
    where = shard_of or (lambda entry: entry.shard_id)
    return {
        "Records": [{"SequenceNumber": str(i), "ShardId": where(e)} for i, e in enumerate(entries)]
    }


class StreamFake:
    """A StreamWriter in memory: ``answer(call, entries)`` decides each PutRecords; ``gate``
    (when set up) makes each put wait for a permit; ``maps`` are the answers of ListShards."""

    def __init__(self, answer: Answer | None = None, maps: Sequence[ShardMap] = ()) -> None:
        self.answer: Answer = answer or (lambda call, entries: accepted(entries))
        self.maps = list(maps) or [shard_map()]
        self.gate: threading.Semaphore | None = None
        self.calls = 0
        self.list_calls = 0
        self.requests: list[list[PutEntry]] = []
        self.stored: list[PutEntry] = []  # in the order Kinesis accepted them
        self._lock = threading.Lock()

    def list_shards(self) -> ShardMap:
        with self._lock:
            self.list_calls += 1
            return self.maps[min(self.list_calls, len(self.maps)) - 1]

    def put_records(self, entries: Sequence[PutEntry]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            call = self.calls
            self.requests.append(list(entries))
        if self.gate is not None:
            self.gate.acquire()
        response: dict[str, Any] = self.answer(call, entries)
        with self._lock:
            self.stored.extend(
                e for e, r in zip(entries, response["Records"], strict=True) if "ErrorCode" not in r
            )
        return response


def payload(symbol: str, index: int) -> dict[str, Any]:
    """The ``data`` of one valid Binance miniTicker frame."""
    return {
        "e": "24hrMiniTicker",
        "E": BASE_TIME_MS + index * 10,
        "s": symbol,
        "c": f"{1000 + index}.00000000",
        "o": "1000.00000000",
        "h": f"{2000 + index}.00000000",
        "l": "999.00000000",
        "v": f"{index}.12345678",
        "q": f"{index * 1000}.87654321",
    }


def frame(symbol: str, index: int) -> dict[str, Any]:
    return {"stream": f"{symbol.lower()}@miniTicker", "data": payload(symbol, index)}


class ScriptedSource:
    """Yields its messages in order, then sets ``stop`` (``stop_at_end``) or waits for it."""

    def __init__(self, messages: Sequence[Any], *, stop_at_end: bool = True) -> None:
        self._messages = list(messages)
        self._stop_at_end = stop_at_end
        self.taken = 0

    async def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        for message in self._messages:
            if stop.is_set():
                return
            self.taken += 1
            yield message
        if self._stop_at_end:
            stop.set()
        await stop.wait()


async def until(condition: Callable[[], bool], rounds: int = 1_000_000) -> None:
    """Yield to the loop (and the pools' threads) until ``condition`` holds."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.0005)
    raise AssertionError("condition never held")
