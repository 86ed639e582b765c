"""The producer service: websocket -> validate -> Avro -> per-shard aggregates -> Kinesis."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from crypto_live.dead_letters import DeadLetter, DeadLetterStore
from crypto_live.health import Health
from crypto_live.metrics import Counters, Gauges, Metrics
from producer.aggregation import RecordTooLargeError
from producer.publisher import Publisher
from producer.source import WireMessage
from producer.validation import ARRAY_STREAM, Rejected, validate_message
from schemas.codec import EncodeError, SingleObjectCodec

log = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "producer"
# Binance sends each miniTicker stream every second: a minute of silence is a dead socket.
SOURCE_SILENCE_SECONDS = 60.0
PUBLISHER_STALL_SECONDS = 60.0


class MessageSource(Protocol):
    """Anything that yields websocket messages until ``stop`` is set."""

    def messages(self, stop: asyncio.Event) -> AsyncIterator[Any]: ...


@dataclass(frozen=True, slots=True)
class ProducerSummary:
    """Counts shown when the producer exits."""

    messages: int
    records_valid: int
    rejected: int
    records_put: int
    kinesis_records: int
    put_requests: int
    retries: int
    undelivered: int

    def __str__(self) -> str:
        return (
            f"{self.messages} messages, {self.records_valid} valid records, "
            f"{self.rejected} rejected to dead letters, {self.records_put} records put to Kinesis "
            f"in {self.kinesis_records} Kinesis records / {self.put_requests} requests, "
            f"{self.retries} retries, {self.undelivered} undelivered"
        )


class ProducerService:
    """Runs the reader, the encoder and the dead-letter writer over one Publisher."""

    def __init__(
        self,
        source: MessageSource,
        publisher: Publisher,
        codec: SingleObjectCodec,
        dead_letters: DeadLetterStore,
        metrics: Metrics,
        *,
        queue_size: int = 10_000,
        dead_letter_flush_seconds: float = 5.0,
        shutdown_timeout: float = 15.0,
        health: Health | None = None,
    ) -> None:
        self._source = source
        self._publisher = publisher
        self._codec = codec
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[Any, int]] = asyncio.Queue(queue_size)
        self._dead_buffer: list[DeadLetter] = []
        self._dead_flush_seconds = dead_letter_flush_seconds
        self._shutdown_timeout = shutdown_timeout
        self._undelivered = 0
        self._health = health or Health()
        self._health.register("source", SOURCE_SILENCE_SECONDS)
        self._health.register("publisher", PUBLISHER_STALL_SECONDS)

    async def run(self, stop: asyncio.Event) -> ProducerSummary:
        """Run until ``stop`` is set, then flush everything; raises if a stage fails."""
        await self._publisher.start()
        reader = asyncio.create_task(self._read(stop), name="producer-read")
        encoder = asyncio.create_task(self._encode(), name="producer-encode")
        dead = asyncio.create_task(self._background(), name="producer-background")
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, encoder, dead, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopper}:
                task.result()  # a failed stage raises here, in its owner
            stop.set()
            await reader
            await self._queue.join()  # every accepted message is encoded before the final flush
        finally:
            stop.set()
            for task in (reader, encoder, dead, stopper):
                task.cancel()
            await asyncio.gather(reader, encoder, dead, stopper, return_exceptions=True)
            await self._shutdown()
        return self.summary()

    async def _shutdown(self) -> None:
        undelivered = await self._publisher.close(self._shutdown_timeout)
        if undelivered:
            self._undelivered = sum(entry.user_records for entry in undelivered)
            log.error(
                "%d records not delivered to Kinesis before shutdown; kept as dead letters",
                self._undelivered,
            )
            now = _now_us()
            self._dead_buffer.extend(
                DeadLetter(entry.data, "not delivered to Kinesis before shutdown", now)
                for entry in undelivered
            )
        await self._flush_dead_letters()

    def summary(self) -> ProducerSummary:
        value = self._metrics.value
        return ProducerSummary(
            messages=int(value(Counters.MESSAGES_RECEIVED)),
            records_valid=int(value(Counters.RECORDS_VALID)),
            rejected=int(value(Counters.RECORDS_REJECTED)),
            records_put=int(value(Counters.RECORDS_PUT)),
            kinesis_records=int(value(Counters.KINESIS_RECORDS_PUT)),
            put_requests=int(value(Counters.PUT_REQUESTS)),
            retries=int(value(Counters.PUT_RETRIES)),
            undelivered=self._undelivered,
        )

    async def _read(self, stop: asyncio.Event) -> None:
        async for message in self._source.messages(stop):
            self._metrics.inc(Counters.MESSAGES_RECEIVED)
            self._health.beat("source")
            await self._queue.put((message, _now_us()))
            self._metrics.set(Gauges.QUEUE_DEPTH, self._queue.qsize())

    async def _encode(self) -> None:
        while True:
            message, received_at = await self._queue.get()
            try:
                await self._encode_one(message, received_at)
            finally:
                self._queue.task_done()

    async def _encode_one(self, message: Any, received_at: int) -> None:
        parsed = message.parsed if isinstance(message, WireMessage) else message
        records, rejected = validate_message(parsed, received_at)
        for reject in rejected:
            self._reject(_dead_letter_raw(message, reject), reject.reason, received_at)
        for record in records:
            try:
                data = self._codec.encode(record)
                await self._publisher.add(record["symbol"], data)
            except (EncodeError, RecordTooLargeError) as err:
                self._reject(json.dumps(record).encode(), str(err), received_at)
                continue
            self._metrics.inc(Counters.RECORDS_VALID)

    def _reject(self, raw: bytes, reason: str, received_at: int) -> None:
        log.warning("rejected message: %s", reason, extra={"reason": reason})
        self._metrics.inc(Counters.RECORDS_REJECTED)
        self._dead_buffer.append(DeadLetter(raw, reason, received_at))

    async def _background(self) -> None:
        """Dead-letter flushes, and the publisher's liveness: progress, or nothing to do."""
        next_flush = time.monotonic() + self._dead_flush_seconds
        last_put = -1.0
        while True:
            await asyncio.sleep(1.0)
            put = self._metrics.value(Counters.RECORDS_PUT)
            if put != last_put or self._publisher.buffered_records == 0:
                self._health.beat("publisher")
            last_put = put
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self._dead_flush_seconds
                await self._flush_dead_letters()

    async def _flush_dead_letters(self) -> None:
        if not self._dead_buffer:
            return
        batch, self._dead_buffer = self._dead_buffer, []
        try:
            key = await asyncio.to_thread(self._dead_letters.put, DEAD_LETTER_SOURCE, batch)
        except Exception as err:  # noqa: BLE001 - whatever failed, keep them and retry later
            log.error("dead letters not written, will retry: %s", err)
            self._dead_buffer[:0] = batch
            return
        self._metrics.inc(Counters.DEAD_LETTERS, len(batch))
        log.info("wrote %d dead letters to %s", len(batch), key)


def _dead_letter_raw(message: Any, reject: Rejected) -> bytes:
    """The frame's exact bytes, unless the reject is one element of an all-market array."""
    if not isinstance(message, WireMessage):
        return reject.raw
    parsed = message.parsed
    if isinstance(parsed, dict) and parsed.get("stream") == ARRAY_STREAM:
        return reject.raw
    raw = message.raw
    return raw.encode() if isinstance(raw, str) else raw


def _now_us() -> int:
    return time.time_ns() // 1000
