"""Sends aggregates to Kinesis: per-shard order, bounded in flight, retries, backpressure.

Every entry ends delivered or handed back as Undelivered: refused for good (a permanent error),
still pending at the close deadline, or in a request unanswered at the deadline (outcome
unknown). Calls run on daemon threads, so a hung request never holds up the close or the exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice, zip_longest
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from core.aws_errors import aws_error, error_code
from core.backoff import Backoff
from core.errors import CryptoLiveError
from core.metrics import Counters, Gauges, Histograms, Metrics
from core.threads import PRODUCER_PUTS, DaemonThreadPool
from producer.aggregation import PutEntry, RecordTooLargeError, ShardAggregator, plan_requests
from producer.kinesis import StreamWriter
from producer.retry import PutResultMismatchError, permanent_failures, split_put_result
from producer.shard_map import ShardMap
from producer.undelivered import (
    NOT_SENT,
    RETRIED_UNANSWERED,
    UNANSWERED,
    Undelivered,
    rejected_reason,
)

log = logging.getLogger(__name__)

MAX_REQUEST_RECORDS = 500
MAX_REQUEST_BYTES = 5 * 1024 * 1024


async def publish_records(
    writer: StreamWriter, records: Iterable[Mapping[str, Any]], grace_seconds: float = 60.0
) -> None:
    """Put already-valid records into the stream as the producer does (Avro by the schema of
    each record's type, KPL aggregates): for replays from the archive, tools and tests. Raises
    if any are left undelivered."""
    from producer.encoding import RecordEncoder
    from schemas.codec import default_codec

    encoder = RecordEncoder(default_codec())
    publisher = Publisher(writer, Metrics("publish"))
    await publisher.start()
    for record in records:
        await publisher.add(str(record["symbol"]), encoder.encode(record))
    undelivered = await publisher.close(grace_seconds)
    if undelivered:
        reasons = sorted({item.reason for item in undelivered})
        raise CryptoLiveError(
            f"{len(undelivered)} Kinesis records not delivered: {'; '.join(reasons)}"
        )


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
        pool: DaemonThreadPool | None = None,
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
        # One thread per request in flight, one for ListShards, one spare.
        self._pool = pool or DaemonThreadPool(max_in_flight + 2, PRODUCER_PUTS)
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
        self._requests: dict[asyncio.Task[None], list[PutEntry]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_task: asyncio.Task[None] | None = None
        self._rejected: list[Undelivered] = []
        # Entries of a request that failed without an answer (a timeout, a dropped connection):
        # Kinesis may have stored them, so if they are still pending at the close deadline
        # their dead letters say the outcome is unknown (redrive then looks before it re-puts).
        self._maybe_stored: set[int] = set()
        self._on_rejected: Callable[[], None] = lambda: None
        self._progress = asyncio.Event()  # set whenever a request ends or a loop dies
        self._failure: BaseException | None = None
        self._closing = False
        self._unbounded = False
        self._stale_map = False
        self._shard_ids: object = ()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Read the shard map and start the sender and flush timer."""
        shard_map = await self._pool.run(self._writer.list_shards)
        self._shard_ids = shard_map.shard_ids
        self._aggregator = ShardAggregator(shard_map, self._max_bytes, self._aggregate)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="publisher-send"),
            asyncio.create_task(self._flush_loop(), name="publisher-flush"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._background_done)

    async def close(self, grace_seconds: float) -> list[Undelivered]:
        """Flush, wait up to ``grace_seconds`` for every put; returns what was not delivered.

        Never waits longer: requests still unanswered then are abandoned (their threads are
        daemons) and their entries returned with ``outcome_unknown``."""
        if self._aggregator is None:
            return []
        self._closing = True
        self.release_backpressure()
        self._enqueue(self._aggregator.flush())
        try:
            await asyncio.wait_for(self._settled(), max(0.0, grace_seconds))
        except TimeoutError:
            log.warning(
                "close: %d entries pending and %d requests unanswered after %.1fs",
                sum(len(queue) for queue in self._pending.values()),
                len(self._requests),
                grace_seconds,
            )
        background = [*self._tasks, *([self._refresh_task] if self._refresh_task else [])]
        requests = dict(self._requests)
        for task in [*background, *requests]:
            task.cancel()
        await asyncio.gather(*background, *requests, return_exceptions=True)
        undelivered, self._rejected = self._rejected, []
        for task, entries in requests.items():
            if task.cancelled():  # abandoned in flight: Kinesis may or may not have them
                undelivered.extend(Undelivered(entry, UNANSWERED, True) for entry in entries)
        undelivered.extend(
            Undelivered(entry, RETRIED_UNANSWERED, True)
            if id(entry) in self._maybe_stored
            else Undelivered(entry, NOT_SENT)
            for queue in self._pending.values()
            for entry in queue
        )
        self._maybe_stored.clear()
        self._pending.clear()
        self._pending_bytes = self._pending_records = 0
        self._aggregator = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._failure is not None:
            log.error("publisher failed: %r", self._failure, exc_info=self._failure)
        return undelivered

    async def _settled(self) -> None:
        """Until nothing is pending or in flight, or a background task died."""
        while any(self._pending.values()) or self._requests:
            if self._failure is not None or any(task.done() for task in self._tasks):
                return
            self._progress.clear()
            await self._progress.wait()

    def release_backpressure(self) -> None:
        """From now on ``add`` never waits (shutdown: what was accepted must get in)."""
        self._unbounded = True
        self._space.set()

    def set_rejected_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever entries were refused for good (see ``take_rejected``),
        or a background task failed (see ``check``)."""
        self._on_rejected = listener

    def take_rejected(self) -> list[Undelivered]:
        """Entries Kinesis refused with a permanent error since the last call. They count as
        pending (backpressure) until taken, so an owner that cannot store them holds us back."""
        taken, self._rejected = self._rejected, []
        self._settle([item.entry for item in taken])
        return taken

    # -- producing -----------------------------------------------------------------------

    async def add(self, partition_key: str, data: bytes) -> None:
        """Buffer one user record; waits while too much is pending (backpressure). Raises the
        error a background task died of."""
        self._check_tasks()
        while not self._space.is_set():
            self._check_tasks()
            await self._space.wait()
        assert self._aggregator is not None, "Publisher.start() not awaited"
        if self._oldest_buffered is None:
            self._oldest_buffered = self._clock()
        entries = self._aggregator.add(partition_key, data)
        if entries:  # the gauge moves per aggregate, not per record (and on every response)
            self._enqueue(entries)
            self._metrics.set(Gauges.BUFFERED_RECORDS, self.buffered_records)

    async def add_many(
        self, records: Sequence[tuple[str, bytes]]
    ) -> list[tuple[int, RecordTooLargeError]]:
        """Buffer user records (partition key, data) in order, as ``add`` does each; waits for
        room once, before them, so a batch may top the pending bound by its own size. Returns
        (index, error) of each record too large for Kinesis; those are not buffered."""
        self._check_tasks()
        while not self._space.is_set():
            self._check_tasks()
            await self._space.wait()
        aggregator = self._aggregator
        assert aggregator is not None, "Publisher.start() not awaited"
        if self._oldest_buffered is None and records:
            self._oldest_buffered = self._clock()
        full, too_large = aggregator.add_many(records)
        if full:
            self._enqueue(full)
            self._metrics.set(Gauges.BUFFERED_RECORDS, self.buffered_records)
        return too_large

    @property
    def buffered_records(self) -> int:
        """User records not yet confirmed by Kinesis."""
        aggregated = self._aggregator.buffered_records if self._aggregator else 0
        return aggregated + self._pending_records

    def check(self) -> None:
        """Raise the error a background task died of, if one did (the owner's health check;
        the rejected listener is called when that happens)."""
        self._check_tasks()

    def _check_tasks(self) -> None:
        # A background task that died must surface in its owner, not vanish.
        if self._failure is not None:
            raise self._failure
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._progress.set()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._on_rejected()

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.pop(task, None)
        # Wake the sender again: _send's own wake-up ran while this task still held its slot,
        # so with every slot ending at once the sender found none free and went back to sleep.
        self._wake.set()
        self._background_done(task)

    def _enqueue(self, entries: list[PutEntry]) -> None:
        for entry in entries:
            self._pending.setdefault(entry.shard_id, deque()).append(entry)
            self._pending_bytes += entry.size
            self._pending_records += entry.user_records
        if entries:
            self._wake.set()
            if self._pending_bytes >= self._max_pending_bytes and not self._unbounded:
                self._space.clear()

    def _requeue_front(self, entries: list[PutEntry]) -> None:
        for entry in reversed(entries):
            self._pending.setdefault(entry.shard_id, deque()).appendleft(entry)

    def _settle(self, entries: list[PutEntry]) -> None:
        """Entries that left the publisher (delivered, or handed back as rejected)."""
        for entry in entries:
            self._pending_bytes -= entry.size
            self._pending_records -= entry.user_records
            self._maybe_stored.discard(id(entry))
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
            refreshing = self._refresh_task is not None and not self._refresh_task.done()
            if (self._stale_map or now >= next_refresh) and not refreshing:
                # Off this loop: a hung ListShards must not stop the time-based flushes.
                next_refresh = now + self._refresh_seconds
                self._refresh_task = asyncio.create_task(self._refresh_map(), name="shard-map")
                self._refresh_task.add_done_callback(self._background_done)

    def _flush_aggregates(self) -> None:
        if self._aggregator is not None:
            self._enqueue(self._aggregator.flush())
        self._oldest_buffered = None

    async def _refresh_map(self) -> None:
        self._stale_map = False
        try:
            shard_map: ShardMap = await self._pool.run(self._writer.list_shards)
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
            # After an unexpected error nothing more is sent: it surfaces in add() and close()
            # hands every entry back (a hot loop resending into the same bug helps nobody).
            while self._failure is None and len(self._requests) < self._max_in_flight:
                request = self._next_request()
                if not request:
                    break
                task = asyncio.create_task(self._send(request))
                self._requests[task] = request
                task.add_done_callback(self._request_done)
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
            response: dict[str, Any] = await self._pool.run(self._writer.put_records, entries)
            self._metrics.observe(Histograms.PUT_SECONDS, self._clock() - started)
            self._metrics.inc(Counters.PUT_REQUESTS)
            self._handle_response(entries, response)
        except (ClientError, BotoCoreError) as err:
            failure = aws_error(err, "PutRecords")
            if failure.retriable:  # throttling, 5xx, timeouts, lost connections
                if isinstance(err, BotoCoreError):  # no answer at all: it may have been stored
                    self._maybe_stored.update(id(entry) for entry in entries)
                self._retry(entries, shards, err)
            else:
                self._reject(entries, _request_error(err))
                self._reset_backoff(shards)
        except PutResultMismatchError as err:
            self._retry(entries, shards, err)
        except Exception as err:  # a bug must not lose entries; it surfaces in add()
            log.error("PutRecords failed unexpectedly: %r", err, exc_info=err)
            self._failure = self._failure or err
            self._requeue_front(entries)
            self._on_rejected()  # the owner looks, and finds the failure in check()
        finally:
            self._in_flight.difference_update(shards)
            self._progress.set()
            self._wake.set()

    def _retry(self, entries: list[PutEntry], shards: set[str], err: Exception) -> None:
        log.warning("PutRecords of %d entries failed, retrying: %s", len(entries), err)
        self._metrics.inc(Counters.PUT_RETRIES, len(entries))
        self._requeue_front(entries)
        self._backoff_shards(shards)

    def _reject(self, entries: list[PutEntry], error: str) -> None:
        reason = rejected_reason(error)
        log.error("%d Kinesis entries refused for good, dead-lettered: %s", len(entries), error)
        self._rejected.extend(Undelivered(entry, reason) for entry in entries)
        self._on_rejected()

    def _handle_response(self, entries: list[PutEntry], response: dict[str, Any]) -> None:
        failed, succeeded = split_put_result(entries, response)
        done = [entry for entry, _, _ in succeeded]
        self._settle(done)
        self._metrics.inc(Counters.RECORDS_PUT, sum(e.user_records for e in done))
        self._metrics.inc(Counters.KINESIS_RECORDS_PUT, len(done))
        self._metrics.inc(Counters.KINESIS_BYTES_PUT, sum(e.size for e in done))
        if any(entry.shard_id != shard_id for entry, shard_id, _ in succeeded):
            self._stale_map = True  # a record landed elsewhere than the map said: resharded
        refused = permanent_failures(entries, response)
        for entry, error in refused:
            self._reject([entry], error)
        refused_ids = {id(entry) for entry, _ in refused}
        failed = [entry for entry in failed if id(entry) not in refused_ids]
        self._reset_backoff({entry.shard_id for entry in done} - {e.shard_id for e in failed})
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

    def _reset_backoff(self, shards: set[str]) -> None:
        for shard in shards:
            self._attempts.pop(shard, None)
            self._retry_at.pop(shard, None)

    def _backoff_shards(self, shards: set[str]) -> None:
        now = self._clock()
        for shard in shards:
            attempt = self._attempts.get(shard, 0)
            self._attempts[shard] = attempt + 1
            self._retry_at[shard] = now + self._backoff.delay(attempt)


def _request_error(err: BaseException) -> str:
    """``"code: message"`` of a refused request, for the dead letters' reason."""
    if isinstance(err, ClientError):
        return f"{error_code(err)}: {err.response.get('Error', {}).get('Message', '')}"
    return str(err)
