"""Reads one owned shard: GetRecords, deaggregate, decode, hand to the processor, checkpoint."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.engine.deaggregation import DeaggregationError, UserRecord, deaggregate
from consumers.engine.leases import SHARD_END, Lease, LeaseLostError, LeaseStore
from consumers.engine.processor import ShardProcessor
from consumers.engine.records import ConsumedRecord, Position, UndecodableRecord
from core.backoff import Backoff
from core.errors import CryptoLiveError
from core.metrics import Counters, Histograms, Metrics
from core.threads import in_thread
from schemas.codec import DecodeError, SingleObjectCodec

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

    async def checkpoint(self, checkpoint: str, sub: int = 0) -> None:
        async with self.lock:
            if self.lost:
                raise LeaseLostError(f"lease {self.lease.shard_id} lost")
            try:
                self.lease = await in_thread(self.store.checkpoint, self.lease, checkpoint, sub)
            except LeaseLostError:
                self.lost = True
                raise

    async def renew(self) -> None:
        async with self.lock:
            if self.lost:
                return
            try:
                self.lease = await in_thread(self.store.renew, self.lease, self.millis_behind)
            except LeaseLostError:
                self.lost = True
                log.warning("lost lease %s", self.lease.shard_id)


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    """Polling behaviour (KCL names in comments)."""

    idle_seconds: float = 0.5  # idleTimeBetweenReadsInMillis
    limit: int = 10_000  # maxRecords
    parent_poll_seconds: float = 1.0


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
    ) -> None:
        self._handle = handle
        self._kinesis = kinesis
        self._stream = stream
        self._processor = processor
        self._codec = codec
        self._dead_letters = dead_letters
        self._config = config
        self._parents_done = parents_done
        self._closed_ending = closed_ending
        self._metrics = metrics or Metrics("shard-reader")
        # (position, received_at µs) of records handed over but not yet checkpointed.
        self._in_sink: deque[tuple[Position, int]] = deque()
        self._backoff = Backoff(base=0.2, cap=10.0)
        self._last_read: int | None = None  # sequence of the last Kinesis record read

    @property
    def shard_id(self) -> str:
        return self._handle.lease.shard_id

    async def run(self, stop: asyncio.Event) -> Outcome:
        """Read until the shard ends, ``stop`` is set or the lease is lost."""
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
        lease = self._handle.lease
        if lease.finished:
            return Outcome.SHARD_END
        skip = lease.position
        iterator = await self._iterator(lease)
        attempt = 0
        while True:
            if self._handle.lost:
                self._processor.abandon()
                return Outcome.LOST
            if stop.is_set():
                await self._commit(await self._processor.shutdown())
                return Outcome.STOPPED
            started = time.monotonic()
            try:
                response = await in_thread(
                    self._kinesis.get_records, ShardIterator=iterator, Limit=self._config.limit
                )
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code == "ExpiredIteratorException":
                    iterator = await self._iterator_after_last_read(lease)
                    continue
                log.warning("GetRecords on %s failed (%s), backing off", self.shard_id, code)
                self._metrics.inc(Counters.GET_RECORDS_RETRIES)
                await _sleep_or_stop(stop, self._backoff.delay(attempt))
                attempt += 1
                continue
            except BotoCoreError as err:
                log.warning("GetRecords on %s failed (%s), backing off", self.shard_id, err)
                self._metrics.inc(Counters.GET_RECORDS_RETRIES)
                await _sleep_or_stop(stop, self._backoff.delay(attempt))
                attempt += 1
                continue
            attempt = 0
            raw_records = response.get("Records", [])
            self._handle.millis_behind = int(response.get("MillisBehindLatest", 0))
            self._metrics.set_shard_lag(self.shard_id, self._handle.millis_behind)
            records = await self._decode(raw_records, skip)
            if raw_records:
                self._last_read = int(raw_records[-1]["SequenceNumber"])
            if records:
                self._metrics.inc(Counters.RECORDS_CONSUMED, len(records))
                self._metrics.observe(Histograms.BATCH_RECORDS, len(records))
                self._in_sink.extend((r.position, int(r.record["received_at"])) for r in records)
                await self._commit(await self._processor.process(records))
            next_iterator = response.get("NextShardIterator")
            if next_iterator is None or (not raw_records and self._read_to_closed_end()):
                await self._end_shard()
                return Outcome.SHARD_END
            iterator = next_iterator
            if not raw_records and self._handle.millis_behind == 0:
                # Caught up: an empty read that is still behind (sparse shards on AWS) is not
                # the tip, and a tip flush there could cut a batch a re-read would not.
                now_ms = time.time_ns() // 1_000_000
                await self._commit(await self._processor.at_tip(now_ms))
            await _sleep_or_stop(
                stop, max(0.0, self._config.idle_seconds - (time.monotonic() - started))
            )

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
        durable = []
        while self._in_sink and self._in_sink[0][0] <= position:
            durable.append(self._in_sink.popleft()[1])
        self._metrics.observe_ages(Histograms.END_TO_END_SECONDS, durable)

    async def _decode(
        self, raw_records: list[dict[str, Any]], skip: Position | None
    ) -> list[ConsumedRecord]:
        out: list[ConsumedRecord] = []
        bad: list[UndecodableRecord] = []
        for raw in raw_records:
            arrival = _utc(raw["ApproximateArrivalTimestamp"])
            try:
                users = deaggregate(raw)
            except DeaggregationError as err:
                position = Position(int(raw["SequenceNumber"]))
                if skip is None or position > skip:
                    bad.append(
                        UndecodableRecord(self.shard_id, position, arrival, raw["Data"], str(err))
                    )
                continue
            for user in users:
                self._decode_user(user, arrival, skip, out, bad)
        if bad:
            await in_thread(self._dead_letters, bad)
        return out

    def _decode_user(
        self,
        user: UserRecord,
        arrival: datetime,
        skip: Position | None,
        out: list[ConsumedRecord],
        bad: list[UndecodableRecord],
    ) -> None:
        position = Position(int(user.sequence_number), user.sub_sequence_number)
        if skip is not None and position <= skip:
            return  # at or before the checkpoint: already durable in the sink
        try:
            record = self._codec.decode(user.data)
        except DecodeError as err:
            bad.append(UndecodableRecord(self.shard_id, position, arrival, user.data, str(err)))
            return
        out.append(ConsumedRecord(self.shard_id, position, arrival, user.partition_key, record))

    async def _iterator(self, lease: Lease) -> str:
        params: dict[str, Any] = {"StreamName": self._stream, "ShardId": lease.shard_id}
        position = lease.position
        if position is not None:
            # AT, not AFTER: later user records of the same KPL aggregate are still unread.
            params.update(
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=position.sequence_number,
            )
        elif lease.checkpoint.startswith("AT_TIMESTAMP:"):
            when = datetime.fromisoformat(lease.checkpoint.removeprefix("AT_TIMESTAMP:"))
            params.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=when)
        elif lease.checkpoint in ("TRIM_HORIZON", "LATEST"):
            params.update(ShardIteratorType=lease.checkpoint)
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
        response = await in_thread(self._kinesis.get_shard_iterator, **params)
        return str(response["ShardIterator"])

    async def _iterator_after_last_read(self, lease: Lease) -> str:
        """After an expired iterator: continue after what was read, never from the start."""
        if self._last_read is None:
            return await self._iterator(self._handle.lease)
        response = await in_thread(
            self._kinesis.get_shard_iterator,
            StreamName=self._stream,
            ShardId=lease.shard_id,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            StartingSequenceNumber=str(self._last_read),
        )
        return str(response["ShardIterator"])


def _utc(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
