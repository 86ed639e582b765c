"""DynamoDB I/O for the sink: batched history and candle puts, conditional latest puts, retried."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any, Final, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from consumers.dynamodb.candles import CandleItem, candle_key, require_unique_candles
from consumers.dynamodb.items import Item, LatestUpdate, chunk, history_key
from core.aws_errors import aws_error, error_code
from core.aws_json import AwsJsonApi, JsonApi
from core.backoff import Backoff
from core.errors import CryptoLiveError
from core.metrics import Counters, Histograms, Metrics
from core.threads import DaemonThreadPool, StopSignal

log = logging.getLogger(__name__)

DEFAULT_GIVE_UP_AFTER: Final = 600.0  # seconds of retrying before the batch is handed back

_T = TypeVar("_T")


class DynamoDbSinkError(CryptoLiveError):
    """Base of the DynamoDB sink's errors."""


class DynamoDbWriteError(DynamoDbSinkError):
    """DynamoDB rejected a call in a way retrying cannot fix (validation, missing table)."""


class DynamoDbRetriesExhaustedError(DynamoDbSinkError):
    """Writes still failed or stayed unprocessed after the retry bound, or the writer closed.

    Nothing was dropped: the batch is simply not durable, so the engine must not checkpoint.
    """

    retriable = True


Refused = tuple[LatestUpdate, str]  # an update DynamoDB refused for good, and why
AnyItem = Mapping[str, Mapping[str, Any]]  # a history or a candle item


class AsyncDynamoDbSink(Protocol):
    """What the processor and the latest pump await; each returns once everything is durable
    (``put_latest``: except the updates it returns, refused for good)."""

    async def put_history(self, items: Sequence[Item]) -> None: ...

    async def put_candles(self, items: Sequence[CandleItem]) -> None: ...

    async def put_latest(self, updates: Sequence[LatestUpdate]) -> list[Refused]: ...


class DynamoDbSinkWriter(Protocol):
    """What the processor needs; every method returns only when everything is durable."""

    def write_history(self, items: Sequence[Item]) -> None: ...

    def write_candles(self, items: Sequence[CandleItem]) -> None: ...

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None: ...


def _require_unique_keys(items: Sequence[Item]) -> None:
    # Duplicates in different requests running concurrently would make the survivor random.
    if len({history_key(item) for item in items}) != len(items):
        raise ValueError("history items must have unique keys; dedupe_history() them first")


class DynamoDbWriter:
    """DynamoDB implementation over a boto3 client (or any JsonApi): each AWS call runs on one
    bounded daemon pool shared by every shard, so ``max_in_flight`` bounds all requests
    together; retries and backoffs wait in asyncio, never holding a thread. ``batch_write``
    and ``update`` each make one AWS call.
    Without ``candles_table``, candle puts are refused (tools that write tickers only)."""

    def __init__(
        self,
        dynamodb: Any,
        history_table: str,
        latest_table: str,
        metrics: Metrics,
        *,
        candles_table: str | None = None,
        max_in_flight: int = 4,
        backoff: Backoff | None = None,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1: {max_in_flight}")
        # Its calls go out as signed requests with bodies built here (core.aws_json): botocore's
        # per-call machinery was about half of the DynamoDB consumer's CPU.
        self._api: JsonApi = dynamodb if isinstance(dynamodb, JsonApi) else AwsJsonApi(dynamodb)
        self._history_table = history_table
        self._latest_table = latest_table
        self._candles_table = candles_table
        self._metrics = metrics
        self._backoff = backoff or Backoff(base=0.05, cap=5.0)
        self._give_up_after = give_up_after
        self._clock = clock
        self._closed = StopSignal()
        # Daemon threads: a request hanging on a partitioned network never holds up the exit.
        self._pool = DaemonThreadPool(max_in_flight, "dynamodb-writer")

    # -- the sink interface, for asyncio -------------------------------------------------

    async def put_history(self, items: Sequence[Item]) -> None:
        """Put every item (25 per BatchWriteItem, side by side), retrying unprocessed items
        until none are left; raises the first failure."""
        _require_unique_keys(items)
        deadline = self._clock() + self._give_up_after
        await all_of([self._put_chunk(piece, deadline) for piece in chunk(items)])

    async def put_candles(self, items: Sequence[CandleItem]) -> None:
        """``put_history`` for candle items, into the candles table (an idempotent upsert:
        the same minute's candle again overwrites the item with the same values)."""
        if self._candles_table is None:
            raise DynamoDbWriteError("this writer has no candles table")
        require_unique_candles(items)
        deadline = self._clock() + self._give_up_after
        table = self._candles_table
        await all_of([self._put_chunk(piece, deadline, table) for piece in chunk(items)])

    async def put_latest(self, updates: Sequence[LatestUpdate]) -> list[Refused]:
        """Apply each symbol's conditional update (an already newer row is left alone); returns
        the updates DynamoDB refused for good, each with the reason, having written the rest."""
        deadline = self._clock() + self._give_up_after
        results = await all_of([self._update_one(update, deadline) for update in updates])
        return [refused for refused in results if refused is not None]

    # -- the same, blocking (tools and tests without an event loop) ----------------------

    def write_history(self, items: Sequence[Item]) -> None:
        """``put_history`` for a caller without an event loop."""
        asyncio.run(self.put_history(items))

    def write_candles(self, items: Sequence[CandleItem]) -> None:
        """``put_candles`` for a caller without an event loop."""
        asyncio.run(self.put_candles(items))

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        """``put_latest`` for a caller without an event loop; raises the first refusal."""
        refused = asyncio.run(self.put_latest(updates))
        if refused:
            raise DynamoDbWriteError(refused[0][1])

    def close(self) -> None:
        """Stop retrying (idempotent): backoffs end at once. A request in flight is not waited
        for: it may hang for its timeouts on a partitioned network, and its batch is not
        checkpointed either way."""
        self._closed.set()
        self._pool.shutdown(wait=False)

    # -- one AWS call each ---------------------------------------------------------------

    def batch_write(self, items: Sequence[AnyItem], table: str | None = None) -> list[AnyItem]:
        """One BatchWriteItem of at most 25 puts into ``table`` (default: the history table);
        returns the items DynamoDB left unprocessed."""
        name = table or self._history_table
        response = self._call(
            "BatchWriteItem", {"RequestItems": {name: [{"PutRequest": {"Item": i}} for i in items]}}
        )
        unprocessed = response.get("UnprocessedItems", {}).get(name, [])
        left: list[AnyItem] = [request["PutRequest"]["Item"] for request in unprocessed]
        written = Counters.DYNAMODB_ITEMS_WRITTEN if table is None else Counters.CANDLES_WRITTEN
        self._metrics.inc(written, len(items) - len(left))
        return left

    def update(self, update: LatestUpdate) -> bool:
        """One conditional PutItem; False when the stored row was already as new or newer."""
        try:
            self._call("PutItem", update.to_request(self._latest_table))
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                self._metrics.inc(Counters.LATEST_STALE_SKIPPED)
                return False
            raise
        self._metrics.inc(Counters.LATEST_UPDATES)
        return True

    def _call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        self._metrics.inc(Counters.DYNAMODB_REQUESTS)
        started = time.perf_counter()
        try:
            return self._api.call(operation, body)
        finally:
            self._metrics.observe(
                Histograms.DYNAMODB_REQUEST_SECONDS, time.perf_counter() - started
            )

    # -- retries -------------------------------------------------------------------------

    async def _put_chunk(
        self, items: Sequence[AnyItem], deadline: float, table: str | None = None
    ) -> None:
        pending = items
        attempt = 0
        while pending:
            pending = await self._retrying(
                partial(self.batch_write, pending, table), "BatchWriteItem", deadline
            )
            if pending:
                # DynamoDB's advice for UnprocessedItems: back off exponentially, then resend.
                self._metrics.inc(Counters.DYNAMODB_UNPROCESSED_RETRIES, len(pending))
                log.debug("%d unprocessed items, retrying", len(pending))
                await self._pause(attempt, deadline, f"{len(pending)} items still unprocessed")
                attempt += 1

    async def _update_one(self, update: LatestUpdate, deadline: float) -> Refused | None:
        try:
            await self._retrying(partial(self.update, update), f"PutItem {update.symbol}", deadline)
        except DynamoDbWriteError as err:
            return update, str(err)
        return None

    async def _retrying(self, call: Callable[[], _T], what: str, deadline: float) -> _T:
        attempt = 0
        while True:
            if self._closed.is_set():
                raise DynamoDbRetriesExhaustedError(f"writer closed before {what}")
            try:
                return await self._pool.run(call)
            except RuntimeError as err:  # the pool shut down under us: closed meanwhile
                if not self._closed.is_set():
                    raise
                raise DynamoDbRetriesExhaustedError(f"writer closed before {what}") from err
            except (ClientError, BotoCoreError) as err:
                if not aws_error(err).retriable:
                    raise DynamoDbWriteError(f"{what} failed: {err}") from err
                self._metrics.inc(Counters.DYNAMODB_CALL_RETRIES)
                log.warning("%s failed, retrying: %s", what, err)
                await self._pause(attempt, deadline, f"{what}: {err}")
                attempt += 1

    async def _pause(self, attempt: int, deadline: float, reason: str) -> None:
        if self._clock() >= deadline:
            raise DynamoDbRetriesExhaustedError(
                f"gave up after {self._give_up_after:.0f}s of retries: {reason}"
            )
        # Sleeping on the closed signal lets close() end a long backoff at once.
        if await self._closed.sleep(self._backoff.delay(attempt)):
            raise DynamoDbRetriesExhaustedError(f"writer closed while retrying: {reason}")


async def all_of(calls: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run the coroutines side by side; their results in order, or the first error raised
    (the others cancelled: the batch is not durable anyway)."""
    if not calls:
        return []
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = {task for task in tasks if not task.done()}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    failed = [t for t in tasks if not t.cancelled() and t.exception() is not None]
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


class ThreadedDynamoDbSink:
    """A blocking DynamoDbSinkWriter (an in-memory fake) behind the asyncio interface, each call
    on a daemon pool; a refused latest batch is retried one update at a time to find the ones
    DynamoDB refuses."""

    def __init__(self, writer: DynamoDbSinkWriter, pool: DaemonThreadPool) -> None:
        self._writer = writer
        self._pool = pool

    async def put_history(self, items: Sequence[Item]) -> None:
        await self._pool.run(self._writer.write_history, items)

    async def put_candles(self, items: Sequence[CandleItem]) -> None:
        await self._pool.run(self._writer.write_candles, items)

    async def put_latest(self, updates: Sequence[LatestUpdate]) -> list[Refused]:
        try:
            await self._pool.run(self._writer.update_latest, updates)
        except DynamoDbWriteError as err:
            if len(updates) == 1:
                return [(updates[0], str(err))]
            refused: list[Refused] = []
            for update in updates:
                refused.extend(await self.put_latest([update]))
            return refused
        return []


def async_sink(writer: DynamoDbSinkWriter, pool: DaemonThreadPool) -> AsyncDynamoDbSink:
    """The asyncio interface of ``writer``: its own when it has one, else its calls on ``pool``."""
    if isinstance(writer, DynamoDbWriter):
        return writer
    return ThreadedDynamoDbSink(writer, pool)


class MemoryDynamoDbWriter:
    """In-memory fake of DynamoDbWriter with the same keys, dedupe contract and forward-only
    rule for the latest table; items are stored as the AttributeValue maps given."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self.history: dict[tuple[str, str], Item] = {}
        self.latest: dict[str, Item] = {}
        self.candles: dict[tuple[str, int], CandleItem] = {}

    def write_history(self, items: Sequence[Item]) -> None:
        """Store each item under its key, replacing what was there."""
        _require_unique_keys(items)
        with self._lock:
            for item in items:
                self.history[history_key(item)] = dict(item)
        self._count(Counters.DYNAMODB_ITEMS_WRITTEN, len(items))

    def write_candles(self, items: Sequence[CandleItem]) -> None:
        """Store each candle under its (symbol, open_time), replacing what was there."""
        require_unique_candles(items)
        with self._lock:
            for item in items:
                self.candles[candle_key(item)] = dict(item)
        self._count(Counters.CANDLES_WRITTEN, len(items))

    def update_latest(self, updates: Sequence[LatestUpdate]) -> None:
        """Apply each update only if the stored row is missing or older."""
        for update in updates:
            with self._lock:
                stored = self.latest.get(update.symbol)
                applied = stored is None or int(stored["event_time"]["N"]) < update.event_time
                if applied:
                    self.latest[update.symbol] = dict(update.attributes)
            self._count(Counters.LATEST_UPDATES if applied else Counters.LATEST_STALE_SKIPPED, 1)

    def close(self) -> None:
        """Nothing to release."""

    def _count(self, name: Counters, amount: int) -> None:
        if self._metrics is not None:
            self._metrics.inc(name, amount)
