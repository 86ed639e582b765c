"""Sends aggregates to Kinesis: per-shard order, bounded in flight, retries, backpressure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from itertools import islice, zip_longest
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from crypto_live.errors import CryptoLiveError
from crypto_live.metrics import Counters, Gauges, Histograms, Metrics
from producer.aggregation import PutEntry, ShardAggregator, plan_requests
from producer.kinesis import StreamWriter
from producer.retry import Backoff, split_put_result
from producer.shard_map import ShardMap

log = logging.getLogger(__name__)

MAX_REQUEST_RECORDS = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024


async def publish_records(
    writer: StreamWriter, records: Iterable[Mapping[str, Any]], grace_seconds: float = 60.0
) -> None:
    """Put already-valid records into the stream as the producer does (Avro, KPL aggregates):
    for replays from the archive, tools and tests. Raises if any are left undelivered."""
    from schemas.codec import default_codec

    codec = default_codec()
    publisher = Publisher(writer, Metrics("publish"))
    await publisher.start()
    for record in records:
        await publisher.add(str(record["symbol"]), codec.encode(record))
    undelivered = await publisher.close(grace_seconds)
    if undelivered:
        raise CryptoLiveError(f"{len(undelivered)} Kinesis records not delivered")


class Publisher:
    """Owns the aggregator and the PutRecords loop.

    Each shard's entries leave in order and a shard is in at most one request at a time.
    Aggregated, a request carries one entry per shard, so a failed entry is never overtaken
    by a newer one of its shard: per-key order holds through partial failures. Unaggregated
    (the benchmark baseline), a request carries many entries per shard, as KPL does, and a
    partial failure may reorder records.
    """

    def __init__(
        self,
        writer: StreamWriter,
        metrics: Metrics,
        *,
        max_bytes: int = 51_200,
        aggregate: bool = True,
        max_in_flight: int = 4,
        max_buffered_time: float = 0.1,
        max_pending_bytes: int = 64 * 1024 * 1024,
        refresh_seconds: float = 30.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._aggregate = aggregate
        self._entries_per_shard = 1 if aggregate else MAX_REQUEST_RECORDS
        self._max_in_flight = max_in_flight
        self._max_buffered_time = max_buffered_time
        self._max_pending_bytes = max_pending_bytes
        self._refresh_seconds = refresh_seconds
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._aggregator: ShardAggregator | None = None
        self._pending: dict[str, deque[PutEntry]] = {}
        self._pending_bytes = 0
        self._pending_records = 0
        self._in_flight: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._oldest_buffered: float | None = None
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._requests: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._stale_map = False
        self._shard_ids: object = ()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Read the shard map and start the sender and flush timer."""
        shard_map = await asyncio.to_thread(self._writer.list_shards)
        self._shard_ids = shard_map.shard_ids
        self._aggregator = ShardAggregator(shard_map, self._max_bytes, self._aggregate)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="publisher-send"),
            asyncio.create_task(self._flush_loop(), name="publisher-flush"),
        ]

    async def close(self, grace_seconds: float) -> list[PutEntry]:
        """Flush, wait up to ``grace_seconds`` for every put; returns what was not delivered."""
        if self._aggregator is None:
            return []
        self._closing = True
        self._enqueue(self._aggregator.flush())
        deadline = self._clock() + grace_seconds
        while (self._pending_records or self._in_flight) and self._clock() < deadline:
            self._check_tasks()
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._requests:
            await asyncio.wait(self._requests, timeout=max(0.0, deadline - self._clock()))
        undelivered = [entry for queue in self._pending.values() for entry in queue]
        self._pending.clear()
        self._aggregator = None
        return undelivered

    # -- producing -----------------------------------------------------------------------

    async def add(self, partition_key: str, data: bytes) -> None:
        """Buffer one user record; waits while too much is pending (backpressure)."""
        while not self._space.is_set():
            self._check_tasks()
            await self._space.wait()
        assert self._aggregator is not None, "Publisher.start() not awaited"
        if self._oldest_buffered is None:
            self._oldest_buffered = self._clock()
        self._enqueue(self._aggregator.add(partition_key, data))
        self._metrics.set(Gauges.BUFFERED_RECORDS, self.buffered_records)

    @property
    def buffered_records(self) -> int:
        """User records not yet confirmed by Kinesis."""
        aggregated = self._aggregator.buffered_records if self._aggregator else 0
        return aggregated + self._pending_records

    def _check_tasks(self) -> None:
        # A background task that died must surface in its owner, not vanish.
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _enqueue(self, entries: list[PutEntry]) -> None:
        for entry in entries:
            self._pending.setdefault(entry.shard_id, deque()).append(entry)
            self._pending_bytes += entry.size
            self._pending_records += entry.user_records
        if entries:
            self._wake.set()
            if self._pending_bytes >= self._max_pending_bytes:
                self._space.clear()

    def _requeue_front(self, entries: list[PutEntry]) -> None:
        for entry in reversed(entries):
            self._pending.setdefault(entry.shard_id, deque()).appendleft(entry)

    def _delivered(self, entries: list[PutEntry]) -> None:
        for entry in entries:
            self._pending_bytes -= entry.size
            self._pending_records -= entry.user_records
        if self._pending_bytes < self._max_pending_bytes:
            self._space.set()

    # -- background loops ----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        next_refresh = self._clock() + self._refresh_seconds
        while True:
            await asyncio.sleep(self._max_buffered_time / 4)
            now = self._clock()
            oldest = self._oldest_buffered
            if oldest is not None and now - oldest >= self._max_buffered_time:
                self._flush_aggregates()
            if self._stale_map or now >= next_refresh:
                next_refresh = now + self._refresh_seconds
                await self._refresh_map()

    def _flush_aggregates(self) -> None:
        if self._aggregator is not None:
            self._enqueue(self._aggregator.flush())
        self._oldest_buffered = None

    async def _refresh_map(self) -> None:
        self._stale_map = False
        try:
            shard_map: ShardMap = await asyncio.to_thread(self._writer.list_shards)
        except (BotoCoreError, ClientError) as err:
            log.warning("shard map refresh failed, keeping the old one: %s", err)
            return
        if self._aggregator is None or shard_map.shard_ids == self._shard_ids:
            return
        self._shard_ids = shard_map.shard_ids
        log.info("stream resharded: now %d open shards", len(shard_map))
        self._metrics.inc(Counters.RESHARDS)
        self._enqueue(self._aggregator.replace_map(shard_map))

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._requests) < self._max_in_flight:
                request = self._next_request()
                if not request:
                    break
                task = asyncio.create_task(self._send(request))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
            self._schedule_retry_wake()

    def _next_request(self) -> list[PutEntry]:
        now = self._clock()
        ready = [
            shard
            for shard, queue in self._pending.items()
            if queue and shard not in self._in_flight and self._retry_at.get(shard, 0.0) <= now
        ]
        if not ready:
            return []
        # Round-robin over shards so one busy shard cannot starve the others; the relative
        # order of each shard's entries is kept, which is all Kinesis needs for ordering.
        per_shard = [islice(self._pending[shard], self._entries_per_shard) for shard in ready]
        heads = [entry for row in zip_longest(*per_shard) for entry in row if entry is not None]
        first = plan_requests(heads, MAX_REQUEST_RECORDS, MAX_REQUEST_BYTES)[0]
        for entry in first:
            self._pending[entry.shard_id].popleft()
        self._in_flight.update(entry.shard_id for entry in first)
        return first

    def _schedule_retry_wake(self) -> None:
        waiting = [
            at for shard, at in self._retry_at.items() if self._pending.get(shard) and at > 0
        ]
        if waiting:
            delay = max(0.0, min(waiting) - self._clock())
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _send(self, entries: list[PutEntry]) -> None:
        shards = {entry.shard_id for entry in entries}
        started = self._clock()
        try:
            response: dict[str, Any] = await asyncio.to_thread(self._writer.put_records, entries)
        except (BotoCoreError, ClientError) as err:
            log.warning("PutRecords of %d entries failed, retrying: %s", len(entries), err)
            self._metrics.inc(Counters.PUT_RETRIES, len(entries))
            self._requeue_front(entries)
            self._backoff_shards(shards)
        else:
            self._metrics.observe(Histograms.PUT_SECONDS, self._clock() - started)
            self._metrics.inc(Counters.PUT_REQUESTS)
            self._handle_response(entries, response)
        finally:
            self._in_flight.difference_update(shards)
            self._wake.set()

    def _handle_response(self, entries: list[PutEntry], response: dict[str, Any]) -> None:
        failed, succeeded = split_put_result(entries, response)
        done = [entry for entry, _, _ in succeeded]
        self._delivered(done)
        self._metrics.inc(Counters.RECORDS_PUT, sum(e.user_records for e in done))
        self._metrics.inc(Counters.KINESIS_RECORDS_PUT, len(done))
        self._metrics.inc(Counters.KINESIS_BYTES_PUT, sum(e.size for e in done))
        if any(entry.shard_id != shard_id for entry, shard_id, _ in succeeded):
            self._stale_map = True  # a record landed elsewhere than the map said: resharded
        for shard in {entry.shard_id for entry in done} - {e.shard_id for e in failed}:
            self._attempts.pop(shard, None)
            self._retry_at.pop(shard, None)
        if failed:
            codes = {
                str(r.get("ErrorCode")) for r in response.get("Records", []) if "ErrorCode" in r
            }
            log.warning("%d of %d entries failed (%s), retrying", len(failed), len(entries), codes)
            self._metrics.inc(Counters.PUT_FAILED_ENTRIES, len(failed))
            self._metrics.inc(Counters.PUT_RETRIES, len(failed))
            self._requeue_front(failed)
            self._backoff_shards({entry.shard_id for entry in failed})
        self._metrics.set(Gauges.BUFFERED_RECORDS, self.buffered_records)

    def _backoff_shards(self, shards: set[str]) -> None:
        now = self._clock()
        for shard in shards:
            attempt = self._attempts.get(shard, 0)
            self._attempts[shard] = attempt + 1
            self._retry_at[shard] = now + self._backoff.delay(attempt)
