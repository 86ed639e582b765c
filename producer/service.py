"""The producer service: websocket -> validate -> Avro -> per-shard aggregates -> Kinesis.

Shutdown is bounded: the publisher gets SHUTDOWN_TIMEOUT_SECONDS, the last dead-letter write
to S3 FINAL_FLUSH_SECONDS; what S3 cannot take then goes to a local JSON-lines file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.dead_letters import DeadLetter, DeadLetterStore, write_local_dead_letters
from core.health import Health
from core.metrics import Counters, Gauges, Metrics
from core.threads import DEAD_LETTERS, POOL_SIZES, DaemonThreadPool
from producer.encoding import RecordEncoder
from producer.handoff import BatchQueue
from producer.miniticker_encoder import MiniTickerEncoder
from producer.publisher import Publisher
from producer.source import WireMessage
from producer.validation import ARRAY_STREAM, MarketRecord, Rejected, validate_message
from schemas.codec import EncodeError, SingleObjectCodec

log = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "producer"
# Binance sends each miniTicker stream every second: a minute of silence is a dead socket.
SOURCE_SILENCE_SECONDS = 60.0
PUBLISHER_STALL_SECONDS = 60.0
# The last dead-letter write to S3 at shutdown may take this long before the local file.
FINAL_FLUSH_SECONDS = 3.0
# Exit codes (README, Operations): some records only in S3 dead letters (run `redrive`); some
# dead letters only in a local file (S3 was unreachable too); some dead letters lost.
EXIT_UNDELIVERED, EXIT_LOCAL_DEAD_LETTERS, EXIT_DEAD_LETTERS_LOST = 1, 3, 4
# Hot-path counters reach the metrics every this many messages or records, and at once
# whenever the encoder has caught up (and in summary()).
METRICS_BATCH = 256
# Every this many messages queued, the reader lets the encoder run: it takes them while they
# are still hot in the CPU's cache, and latency stays low under a burst.
HANDOFF_BATCH = 256


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
    dead_letters_local: int = 0
    dead_letters_lost: int = 0
    local_file: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when every record is in Kinesis (or, for bad input, in S3 dead letters)."""
        if self.dead_letters_lost:
            return EXIT_DEAD_LETTERS_LOST
        if self.dead_letters_local:
            return EXIT_LOCAL_DEAD_LETTERS
        return EXIT_UNDELIVERED if self.undelivered else 0

    def __str__(self) -> str:
        text = (
            f"{self.messages} messages, {self.records_valid} valid records, "
            f"{self.rejected} rejected to dead letters, {self.records_put} records put to Kinesis "
            f"in {self.kinesis_records} Kinesis records / {self.put_requests} requests, "
            f"{self.retries} retries, {self.undelivered} undelivered (kept as dead letters)"
        )
        if self.dead_letters_local:
            text += f", {self.dead_letters_local} dead letters in local file {self.local_file}"
        if self.dead_letters_lost:
            text += f", {self.dead_letters_lost} dead letters LOST"
        return text


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
        dead_letter_max_bytes: int = 8 * 1024 * 1024,
        dead_letter_dir: Path = Path("dead-letters"),
        final_flush_seconds: float = FINAL_FLUSH_SECONDS,
    ) -> None:
        self._source = source
        self._publisher = publisher
        # Each record by the codec of its type (miniTicker, kline); one stream carries both.
        self._encoders = RecordEncoder(codec).by_event_type
        # Valid miniTicker messages validated and encoded in one step; the rest as above.
        self._hot_path = MiniTickerEncoder(codec).encode_message
        self._dead_letters = dead_letters
        self._metrics = metrics
        # (message, received_at µs), taken by the encoder a batch at a time.
        self._queue: BatchQueue[tuple[Any, int]] = BatchQueue(queue_size)
        # Dead letters waiting for S3, bounded: at the bound, producing waits (backpressure).
        self._dead_buffer: list[DeadLetter] = []
        self._dead_names: dict[int, str] = {}  # id(first letter) -> name of its unknown put
        self._dead_bytes = 0  # buffered plus being written
        self._dead_max_bytes = dead_letter_max_bytes
        self._dead_space = asyncio.Event()
        self._dead_space.set()
        self._dead_wake = asyncio.Event()
        self._dead_dir = dead_letter_dir
        self._final_flush_seconds = final_flush_seconds
        self._unbounded = False  # shutting down: everything accepted must be kept
        self._dead_pool = DaemonThreadPool(POOL_SIZES[DEAD_LETTERS], DEAD_LETTERS)
        self._dead_flush_seconds = dead_letter_flush_seconds
        self._shutdown_timeout = shutdown_timeout
        self._undelivered = 0
        self._messages_read = 0  # messages the reader took from the source
        self._received = 0  # of those, already added to MESSAGES_RECEIVED (see _count_hot)
        self._valid = 0  # valid records not yet added to RECORDS_VALID
        self._local = 0
        self._lost = 0
        self._local_file: str | None = None
        publisher.set_rejected_listener(self._dead_wake.set)
        self._health = health or Health()
        self._health.register("source", SOURCE_SILENCE_SECONDS)
        self._health.register("publisher", PUBLISHER_STALL_SECONDS)

    async def run(self, stop: asyncio.Event) -> ProducerSummary:
        """Run until ``stop`` is set, then flush everything; raises if a stage fails."""
        if not await self._start(stop):
            return self.summary()
        reader = asyncio.create_task(self._read(stop), name="producer-read")
        encoder = asyncio.create_task(self._encode(), name="producer-encode")
        dead = asyncio.create_task(self._background(), name="producer-background")
        stopper = asyncio.create_task(stop.wait())
        done: set[asyncio.Task[Any]] = set()
        try:
            done, _ = await asyncio.wait(
                {reader, encoder, dead, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopper}:
                task.result()  # a failed stage raises here, in its owner
            stop.set()
            self._release_backpressure()
            await reader
            await self._queue.join()  # every accepted message is encoded before the final flush
        finally:
            stop.set()
            self._release_backpressure()
            stages = (reader, encoder, dead, stopper)
            for task in stages:
                task.cancel()
            results = await asyncio.gather(*stages, return_exceptions=True)
            for task, result in zip(stages, results, strict=True):
                if task not in done and isinstance(result, Exception):
                    log.error("%s failed: %r", task.get_name(), result, exc_info=result)
            await self._shutdown()
        return self.summary()

    async def _start(self, stop: asyncio.Event) -> bool:
        """Start the publisher unless ``stop`` comes first (Kinesis may hang at start too)."""
        start = asyncio.create_task(self._publisher.start(), name="publisher-start")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (start, stopper):
            task.cancel()
        await asyncio.gather(start, stopper, return_exceptions=True)
        if start.cancelled():
            log.warning("stopped before the publisher started (Kinesis unreachable?)")
            return False
        start.result()
        return True

    def _release_backpressure(self) -> None:
        # Shutting down, a full buffer must not stop the last messages from being kept:
        # the websocket queue bounds what is still to come.
        self._unbounded = True
        self._dead_space.set()
        self._publisher.release_backpressure()

    async def _shutdown(self) -> None:
        undelivered = await self._publisher.close(self._shutdown_timeout)
        if undelivered:
            count = sum(item.entry.user_records for item in undelivered)
            self._undelivered += count
            unknown = sum(item.entry.user_records for item in undelivered if item.outcome_unknown)
            log.error(
                "%d records not delivered to Kinesis before shutdown (%d in requests with an "
                "unknown outcome); kept as dead letters for `crypto-live redrive`",
                count,
                unknown,
            )
            now = _now_us()
            self._buffer_dead([item.dead_letter(now) for item in undelivered])
        await self._final_flush()
        self._dead_pool.shutdown(wait=False, cancel_futures=True)

    async def _final_flush(self) -> None:
        """Write the dead letters to S3 within a deadline, else to a local file."""
        if not self._dead_buffer:
            return
        try:
            if await asyncio.wait_for(self._flush_dead_letters(), self._final_flush_seconds):
                return
        except TimeoutError:
            log.error("dead letters not written to S3 within %.1fs", self._final_flush_seconds)
        letters, self._dead_buffer = self._dead_buffer, []
        for directory in (self._dead_dir, Path(tempfile.gettempdir())):
            try:
                path = write_local_dead_letters(directory, DEAD_LETTER_SOURCE, letters)
            except OSError as err:
                log.error("dead letters not written to %s: %s", directory, err)
                continue
            self._local, self._local_file = len(letters), str(path)
            log.error(
                "S3 unreachable: %d dead letters written to local file %s; "
                "put them back with `crypto-live redrive --file %s`",
                len(letters),
                path,
                path,
            )
            return
        self._lost = len(letters)
        log.critical("%d dead letters LOST: neither S3 nor a local file took them", self._lost)

    def summary(self) -> ProducerSummary:
        self._count_hot()
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
            dead_letters_local=self._local,
            dead_letters_lost=self._lost,
            local_file=self._local_file,
        )

    async def _read(self, stop: asyncio.Event) -> None:
        # The source's liveness is beaten by _background, from the count of messages read.
        queue = self._queue
        offer, time_ns = queue.offer, time.time_ns  # once per message: bound here
        try:
            async for message in self._source.messages(stop):
                item = (message, time_ns() // 1000)
                if not offer(item):
                    self._count_hot()
                    self._metrics.set(Gauges.QUEUE_DEPTH, queue.qsize())
                    await queue.put(item)  # full: backpressure
                elif queue.qsize() % HANDOFF_BATCH == 0:
                    await asyncio.sleep(0)  # let the encoder start on these
                self._messages_read += 1
                if self._messages_read - self._received >= METRICS_BATCH:
                    self._count_hot()
        finally:
            self._count_hot()

    async def _encode(self) -> None:
        while True:
            if self._queue.empty():  # caught up: the counters are exact while idle
                self._count_hot()
                self._metrics.set(Gauges.QUEUE_DEPTH, 0)
            batch = await self._queue.take()
            try:
                await self._encode_batch(batch)
            finally:
                self._queue.done(len(batch))

    def _count_hot(self) -> None:
        """Add the messages and records counted since the last call to their metrics (batched:
        a counter's increment costs about as much as validating a record)."""
        if self._messages_read != self._received:
            self._metrics.inc(Counters.MESSAGES_RECEIVED, self._messages_read - self._received)
            self._received = self._messages_read
        if self._valid:
            self._metrics.inc(Counters.RECORDS_VALID, self._valid)
            self._valid = 0

    async def _encode_batch(self, batch: list[tuple[Any, int]]) -> None:
        """Validate and encode a batch of messages, then buffer its records in one call; every
        reject, unencodable or oversized record becomes a dead letter."""
        hot_path = self._hot_path
        encoded: list[tuple[str, bytes]] = []
        # The record of each one encoded by validate_message + codec, by its index in
        # ``encoded``, for the dead letter if it turns out too large for Kinesis.
        slow: dict[int, tuple[MarketRecord, int]] = {}
        for message, received_at in batch:
            parsed = message.parsed if type(message) is WireMessage else message
            if not hot_path(parsed, received_at, encoded):
                await self._encode_slowly(message, parsed, received_at, encoded, slow)
        too_large = await self._publisher.add_many(encoded)
        for index, error in too_large:
            source = slow.get(index)
            if source is None:  # only the slow path can make one this large (a miniTicker
                raw, received_at = encoded[index][1], 0  # is < 400 bytes); kept all the same
            else:
                raw, received_at = json.dumps(source[0]).encode(), source[1]
            await self._reject(raw, str(error), received_at)
        self._valid += len(encoded) - len(too_large)
        if self._valid >= METRICS_BATCH:
            self._count_hot()

    async def _encode_slowly(
        self,
        message: Any,
        parsed: Any,
        received_at: int,
        encoded: list[tuple[str, bytes]],
        slow: dict[int, tuple[MarketRecord, int]],
    ) -> None:
        """validate_message, then the codec of each record's type: rejects (with their
        reasons) and klines, and whatever the hot path does not take."""
        records, rejected = validate_message(parsed, received_at)
        for reject in rejected:
            await self._reject(_dead_letter_raw(message, reject), reject.reason, received_at)
        for record in records:
            try:
                data = self._encoders[record["event_type"]](record)
            except EncodeError as err:
                await self._reject(json.dumps(record).encode(), str(err), received_at)
                continue
            slow[len(encoded)] = (record, received_at)
            encoded.append((record["symbol"], data))

    async def _reject(self, raw: bytes, reason: str, received_at: int) -> None:
        log.warning("rejected message: %s", reason, extra={"reason": reason})
        self._metrics.inc(Counters.RECORDS_REJECTED)
        while self._dead_bytes >= self._dead_max_bytes and not self._unbounded:
            self._dead_space.clear()
            self._dead_wake.set()
            await self._dead_space.wait()
        self._buffer_dead([DeadLetter(raw, reason, received_at)])

    def _buffer_dead(self, letters: list[DeadLetter]) -> None:
        self._dead_buffer.extend(letters)
        self._dead_bytes += sum(len(letter.raw) for letter in letters)
        if self._dead_bytes >= self._dead_max_bytes // 2:
            self._dead_wake.set()

    def _take_rejected(self) -> None:
        """Move what Kinesis refused for good into the dead letters, while there is room."""
        if self._dead_bytes >= self._dead_max_bytes and not self._unbounded:
            return
        refused = self._publisher.take_rejected()
        if refused:
            self._undelivered += sum(item.entry.user_records for item in refused)
            now = _now_us()
            self._buffer_dead([item.dead_letter(now) for item in refused])

    async def _background(self) -> None:
        """Dead-letter flushes (every few seconds, sooner when the buffer fills), the source's
        liveness (messages read), and the publisher's: progress, or nothing to do."""
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self._dead_flush_seconds
        retry_at = 0.0
        next_beat = 0.0
        last_put = -1.0
        last_read = 0
        while True:
            with contextlib.suppress(TimeoutError):
                wake_at = min(next_flush, next_beat)
                if self._dead_bytes >= self._dead_max_bytes // 2:
                    wake_at = min(wake_at, retry_at)
                timeout = min(1.0, max(0.0, wake_at - loop.time()))
                await asyncio.wait_for(self._dead_wake.wait(), timeout)
            self._dead_wake.clear()
            self._publisher.check()  # a dead publisher surfaces here, in run()
            now = loop.time()
            if self._messages_read != last_read:  # messages arrived since the last look
                last_read = self._messages_read
                self._health.beat("source")
            if now >= next_beat:
                next_beat = now + 1.0
                put = self._metrics.value(Counters.RECORDS_PUT)
                if put != last_put or self._publisher.buffered_records == 0:
                    self._health.beat("publisher")
                last_put = put
            self._take_rejected()
            due = now >= next_flush
            urgent = self._dead_bytes >= self._dead_max_bytes // 2 and now >= retry_at
            if due:
                next_flush = now + self._dead_flush_seconds
            if self._dead_buffer and (due or urgent) and not await self._flush_dead_letters():
                retry_at = loop.time() + min(1.0, self._dead_flush_seconds)

    async def _flush_dead_letters(self) -> bool:
        """Write the buffered dead letters to S3, one object per kind; False if one failed
        (its letters stay buffered for the next try)."""
        while self._dead_buffer:
            batch, self._dead_buffer = _split_kind(self._dead_buffer)
            # A put whose outcome we never learn (cancelled at shutdown, or timed out) may
            # have landed: its letters are tried again under the same name, so the object is
            # overwritten (by a superset: the batch starts with the same letters), not doubled.
            name = self._dead_names.pop(id(batch[0]), None) or _object_name(batch[0])
            try:
                key = await self._dead_pool.run(
                    self._dead_letters.put, DEAD_LETTER_SOURCE, batch, name
                )
            except asyncio.CancelledError:
                self._dead_buffer = batch + self._dead_buffer  # outcome unknown: keep them
                self._dead_names[id(batch[0])] = name
                raise
            except Exception as err:  # noqa: BLE001 - whatever failed, keep them and retry later
                log.error("dead letters not written, will retry: %s", err)
                self._dead_buffer = batch + self._dead_buffer
                self._dead_names[id(batch[0])] = name
                return False
            self._dead_bytes -= sum(len(letter.raw) for letter in batch)
            if self._dead_bytes < self._dead_max_bytes:
                self._dead_space.set()
            self._metrics.inc(Counters.DEAD_LETTERS, len(batch))
            log.info("wrote %d dead letters to %s", len(batch), key)
        return True


def _object_name(first: DeadLetter) -> str:
    """A new dead-letter object's name; undelivered records go to objects of their own."""
    kind = "undelivered-" if first.put_entry is not None else ""
    return f"{kind}{first.received_at}-{uuid.uuid4().hex[:12]}"


def _split_kind(letters: list[DeadLetter]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """(the letters of the first one's kind, the others): undelivered records and bad input
    go to separate objects, so `redrive` can move whole objects."""
    kind = letters[0].put_entry is None
    same = [letter for letter in letters if (letter.put_entry is None) == kind]
    return same, [letter for letter in letters if (letter.put_entry is None) != kind]


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
