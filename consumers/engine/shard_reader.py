"""Reads one owned shard: GetRecords, deaggregate, decode, hand to the processor, checkpoint."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumers.engine.decoding import decode_page
from consumers.engine.executors import BlockingRunner, EngineExecutors, PoolRunner
from consumers.engine.kinesis import ExpiredIteratorError, IteratorType, RecordsPage, shards_of
from consumers.engine.leases import SHARD_END, Lease, LeaseLostError, LeaseStore
from consumers.engine.processor import ShardProcessor
from consumers.engine.read_limit import ReadLimit, ReadPace
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from core.aws_errors import aws_error, is_aws_error
from core.backoff import Backoff
from core.errors import AwsError, CryptoLiveError
from core.metrics import Counters, Histograms, Metrics
from core.threads import LEASE_CALLS
from schemas.codec import SingleObjectCodec

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """Why a shard reader returned."""

    SHARD_END = "shard_end"  # fully read and checkpointed SHARD_END
    STOPPED = "stopped"  # graceful stop; the checkpoint holds everything durable
    LOST = "lost"  # another worker owns the lease now


@dataclass
class LeaseHandle:
    """The current version of one owned lease; every write goes through its lock."""

    lease: Lease
    store: LeaseStore
    lost: bool = False
    millis_behind: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Lease calls run on their own pool, never behind sink writes.
    run: BlockingRunner = field(default_factory=lambda: PoolRunner(LEASE_CALLS))
    renewed_at: float = 0.0  # event-loop time of the last successful take or renewal

    async def checkpoint(self, checkpoint: str, sub: int = 0) -> None:
        async with self.lock:
            if self.lost:
                raise LeaseLostError(f"lease {self.lease.shard_id} lost")
            try:
                self.lease = await self.run(self.store.checkpoint, self.lease, checkpoint, sub)
            except LeaseLostError:
                self.lost = True
                raise

    async def renew(self) -> None:
        """Renew unless lost; a lease-table error (AwsError) propagates to the caller."""
        async with self.lock:
            if self.lost:
                return
            try:
                started = asyncio.get_running_loop().time()
                self.lease = await self.run(self.store.renew, self.lease, self.millis_behind)
                self.renewed_at = started  # the table saw the renewal no earlier than this
            except LeaseLostError:
                self.lost = True
                log.warning("lost lease %s", self.lease.shard_id)


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """Polling behaviour (KCL names in comments)."""

    # idleTimeBetweenReadsInMillis: the pause after a read at the tip. A shard that is behind
    # (the page had records, MillisBehindLatest > 0) is read on at once, as long as no more
    # than 1 / idle_seconds reads fall in any second: the same pace on average (two groups
    # stay under AWS's 5 reads a second per shard), but a bounded page (max_user_records) is
    # not followed by a pause while more are waiting.
    idle_seconds: float = 0.5
    limit: int = 10_000  # maxRecords: Kinesis records per GetRecords at most
    # User records a page may hold at most (KPL aggregates counted by what they carry): the
    # Limit asked for adapts to the records per aggregate seen (consumers.engine.read_limit).
    max_user_records: int = 10_000
    parent_poll_seconds: float = 1.0
    # After a retriable failure past the read loop (a sink out of retries, a checkpoint or
    # GetShardIterator failing): wait this backoff, then read again from the checkpoint.
    retry_backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    wall_clock_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)


class ShardReader:
    """One shard, one lease, one processor; returns an Outcome."""

    def __init__(
        self,
        handle: LeaseHandle,
        kinesis: Any,
        stream: str,
        processor: ShardProcessor,
        codec: SingleObjectCodec,
        dead_letters: Callable[[list[UndecodableRecord]], None],
        *,
        config: ReaderConfig,
        parents_done: Callable[[], bool],
        closed_ending: Callable[[], int | None],
        metrics: Metrics | None = None,
        executors: EngineExecutors | None = None,
    ) -> None:
        self._handle = handle
        self._kinesis = shards_of(kinesis, stream)
        self._executors = executors or EngineExecutors()
        self._stream = stream
        self._processor = processor
        self._codec = codec
        self._dead_letters = dead_letters
        self._config = config
        self._parents_done = parents_done
        self._closed_ending = closed_ending
        self._metrics = metrics or Metrics("shard-reader")
        # Per batch handed over and not yet checkpointed: its records' positions (in shard
        # order) and their received_at µs (None for a type without one), for the latency
        # histogram once they are durable.
        self._in_sink: deque[tuple[list[Position], list[int | None]]] = deque()
        self._backoff = Backoff(base=0.2, cap=10.0)
        self._last_read: int | None = None  # sequence of the last Kinesis record read
        self._commits = 0  # checkpoints written: a pass that wrote one resets the backoff
        self._read_limit = ReadLimit(config.limit, config.max_user_records)
        self._pace = ReadPace(config.idle_seconds, max(1, round(1 / config.idle_seconds)))

    @property
    def shard_id(self) -> str:
        return self._handle.lease.shard_id

    async def run(self, stop: asyncio.Event) -> Outcome:
        """Read until the shard ends, ``stop`` is set or the lease is lost. A retriable
        failure (a sink out of retries, a lease-table or Kinesis call) backs this shard off and
        reads again from its checkpoint; a permanent one is raised to the owner."""
        try:
            return await self._run(stop)
        except LeaseLostError:
            self._processor.abandon()
            return Outcome.LOST
        finally:
            self._metrics.set_shard_lag(self.shard_id, None)

    async def _run(self, stop: asyncio.Event) -> Outcome:
        while not self._parents_done():
            if stop.is_set() or self._handle.lost:
                return Outcome.STOPPED if not self._handle.lost else Outcome.LOST
            await _sleep_or_stop(stop, self._config.parent_poll_seconds)
        failures = 0
        while True:
            commits = self._commits
            try:
                return await self._read(stop)
            except LeaseLostError:
                raise
            except Exception as err:
                if is_aws_error(err):  # a sink or dead-letter store that leaked botocore's
                    err = aws_error(err)
                if not isinstance(err, CryptoLiveError) or not err.retriable:
                    raise
                if self._commits > commits:
                    failures = 0  # the pass checkpointed: a new failure, not a repeat of one
                # Nothing beyond the checkpoint is durable for sure: drop it, wait, re-read.
                self._processor.abandon()
                delay = self._config.retry_backoff.delay(failures)
                failures += 1
                log.warning(
                    "shard %s backs off %.1fs and re-reads from its checkpoint: %s",
                    self.shard_id,
                    delay,
                    err,
                    extra={"shard_id": self.shard_id},
                )
                await _sleep_or_stop(stop, delay)
                if self._handle.lost:
                    return Outcome.LOST
                if stop.is_set():
                    return Outcome.STOPPED

    async def _read(self, stop: asyncio.Event) -> Outcome:
        """One pass from the lease's checkpoint to shard end, stop or lost."""
        lease = self._handle.lease
        if lease.finished:
            return Outcome.SHARD_END
        self._in_sink.clear()
        self._last_read = None
        skip = lease.position
        iterator = await self._iterator(lease)
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            if self._handle.lost:
                self._processor.abandon()
                return Outcome.LOST
            if stop.is_set():
                await self._commit(await self._processor.shutdown())
                return Outcome.STOPPED
            self._pace.started(loop.time())
            try:
                page = await self._executors.reads(
                    self._kinesis.get_records, iterator, self._read_limit.next
                )
            except ExpiredIteratorError:
                iterator = await self._iterator_after_last_read()
                continue
            except AwsError as err:
                if not err.retriable:
                    raise
                log.warning("GetRecords on %s failed (%s), backing off", self.shard_id, err)
                self._metrics.inc(Counters.GET_RECORDS_RETRIES)
                # Throttled: the shard's read budget is spent for a second or so; wait longer.
                await _sleep_or_stop(stop, self._backoff.delay(attempt + 2 * err.throttled))
                attempt += 1
                continue
            attempt = 0
            if await self._handle_page(page, skip):
                await self._end_shard()
                return Outcome.SHARD_END
            assert page.next_iterator is not None  # None ended the shard above
            iterator = page.next_iterator
            if not page.records and page.millis_behind == 0:
                # Caught up: an empty read that is still behind (sparse shards on AWS) is not
                # the tip, and a tip flush there could cut a batch a re-read would not.
                await self._commit(await self._processor.at_tip(self._config.wall_clock_ms()))
            behind = bool(page.records) and bool(page.millis_behind)
            await _sleep_or_stop(stop, self._pace.pause(loop.time(), behind))

    async def _handle_page(self, page: RecordsPage, skip: Position | None) -> bool:
        """Hand one page to the processor; True when the shard has ended."""
        self._handle.millis_behind = page.millis_behind
        self._metrics.set_shard_lag(self.shard_id, page.millis_behind)
        started = asyncio.get_running_loop().time()
        records = await self._decode(page.records, skip)
        self._read_limit.observe(_yielding(page.records, records), len(records))
        if page.records:
            self._last_read = int(page.records[-1]["SequenceNumber"])
        if records:
            self._metrics.inc(Counters.RECORDS_CONSUMED, len(records))
            self._metrics.observe(Histograms.BATCH_RECORDS, len(records))
            self._in_sink.append(
                ([r.position for r in records], [_received_at(r.record) for r in records])
            )
            await self._commit(await self._processor.process(records))
            self._read_limit.handed(len(records), asyncio.get_running_loop().time() - started)
        # AWS ends a closed shard with a null iterator; moto never does (see below).
        return page.next_iterator is None or (not page.records and self._read_to_closed_end())

    def _read_to_closed_end(self) -> bool:
        # moto never returns a null NextShardIterator: a closed shard (per ListShards) whose
        # records up to its EndingSequenceNumber were all read has ended as well.
        ending = self._closed_ending()
        if ending is None:
            return False
        last = self._last_read
        if last is None:
            position = self._handle.lease.position
            last = position.sequence if position else None
        return ending == 0 or (last is not None and last >= ending)

    async def _end_shard(self) -> None:
        await self._commit(await self._processor.shard_ended())
        await self._handle.checkpoint(SHARD_END)
        log.info("shard %s reached SHARD_END", self.shard_id, extra={"shard_id": self.shard_id})

    async def _commit(self, position: Position | None) -> None:
        if position is None:
            return
        await self._handle.checkpoint(position.sequence_number, position.sub_sequence)
        self._commits += 1
        durable: list[int | None] = []
        while self._in_sink:
            positions, received = self._in_sink[0]
            if positions[-1] <= position:
                durable += received
                self._in_sink.popleft()
                continue
            cut = bisect_right(positions, position)  # the batch is durable up to here
            if cut:
                durable += received[:cut]
                self._in_sink[0] = (positions[cut:], received[cut:])
            break
        self._metrics.observe_ages(
            Histograms.END_TO_END_SECONDS, [at for at in durable if at is not None]
        )

    async def _decode(
        self, raw_records: list[dict[str, Any]], skip: Position | None
    ) -> list[ConsumedRecord]:
        out, bad = decode_page(self.shard_id, self._codec, raw_records, skip)
        if bad:
            await self._executors.dead_letters(self._dead_letters, bad)
        return out

    async def _iterator(self, lease: Lease) -> str:
        position = lease.position
        kind: IteratorType
        sequence: str | None = None
        timestamp: datetime | None = None
        if position is not None:
            # AT, not AFTER: later user records of the same KPL aggregate are still unread.
            kind, sequence = "AT_SEQUENCE_NUMBER", position.sequence_number
        elif lease.checkpoint.startswith("AT_TIMESTAMP:"):
            kind = "AT_TIMESTAMP"
            timestamp = datetime.fromisoformat(lease.checkpoint.removeprefix("AT_TIMESTAMP:"))
        elif lease.checkpoint == "TRIM_HORIZON":
            kind = "TRIM_HORIZON"
        elif lease.checkpoint == "LATEST":
            kind = "LATEST"
        else:
            raise CryptoLiveError(
                f"lease {lease.shard_id} has a bad checkpoint {lease.checkpoint!r}"
            )
        log.info(
            "reading %s from %s",
            lease.shard_id,
            f"checkpoint {position}" if position else lease.checkpoint,
            extra={"shard_id": lease.shard_id},
        )
        return await self._executors.reads(
            self._kinesis.shard_iterator,
            lease.shard_id,
            kind,
            sequence=sequence,
            timestamp=timestamp,
        )

    async def _iterator_after_last_read(self) -> str:
        """After an expired iterator: continue after what was read, never from the start."""
        if self._last_read is None:
            return await self._iterator(self._handle.lease)
        return await self._executors.reads(
            self._kinesis.shard_iterator,
            self.shard_id,
            "AFTER_SEQUENCE_NUMBER",
            sequence=str(self._last_read),
        )


def _yielding(raw_records: list[dict[str, Any]], records: list[ConsumedRecord]) -> int:
    """The page's Kinesis records from the first one that yielded a record on: those before
    it were at or before the checkpoint (or undecodable), so they held nothing to hand over."""
    if not records:
        return 0
    first = records[0].position.sequence
    return sum(1 for raw in raw_records if int(raw["SequenceNumber"]) >= first)


def _received_at(record: dict[str, Any]) -> int | None:
    """The producer's receipt time (epoch µs) for the latency histogram; None for a type
    without one (every type of ours has it, a future one may not)."""
    value = record.get("received_at")
    return value if isinstance(value, int) else None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
