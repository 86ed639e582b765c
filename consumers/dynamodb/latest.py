"""Latest-table updates off the history path, coalesced per symbol while they wait.

History items are written with each batch; the batch's latest-ticker updates go to a
``LatestBook`` that one ``LatestPump`` (asyncio tasks, their AWS calls on the writer's daemon
pool) drains through the writer with a fixed number of calls in flight: a call starts as soon
as any other ends, never in rounds that wait for their slowest. While an update waits, a newer
one for the same symbol takes its place (keeping its place in the queue, so a busy symbol is
not starved), so the number of latest-table writes adapts to what DynamoDB sustains: one per
symbol per batch when it keeps up, fewer under a backlog, a replay or more symbols than the
table takes per second - without holding up the history table or the shard's reads.

A shard catching up (its batch's records were received long ago) hands over a batch every
read, each with a row for most symbols: its updates are held until the shard reaches its tip
(``release``), at most ``hold`` seconds from when their symbol's row first waited, so the
batches read meanwhile coalesce into one write per symbol (a catch-up writes each row once, or
once per hold if it lasts longer); a fresh update replacing a held one is written at once. At
the tip nothing is held.

Checkpoint rule (what ``first_blocked`` answers): a shard's batch may be checkpointed once none
of its updates is waiting or being written. An update replaced by a newer one is covered by its
replacement, which blocks the replacement's batch until written; after a crash every batch
after the checkpoint is read again, so each symbol's row still ends at its newest event.

An update DynamoDB refuses for good (a permanent error for that symbol's row) is dead-lettered
with its reason and counts as written: it must not hold up, nor fail, every shard sharing the
book. Only a failure the retries could not get past fails the book (nothing later can become
durable then).

No thread waits on another: asyncio code awaits the book (``until_clear``, ``until_work``,
``until_empty``), which wakes it through ``loop.call_soon_threadsafe``; the blocking waits
(``wait_clear``, ``wait_empty``) remain for callers without an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from consumers.dynamodb.items import LatestUpdate
from consumers.dynamodb.writer import AsyncDynamoDbSink, DynamoDbRetriesExhaustedError, Refused
from core.dead_letters import DeadLetter, DeadLetterStore
from core.metrics import Counters, Gauges, Histograms, Metrics
from core.threads import DEAD_LETTERS, run_in

log = logging.getLogger(__name__)

# Latest-row calls in flight, as many as the writer runs at once by default.
DEFAULT_CONCURRENCY: Final = 4

_Watcher = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", Callable[[], bool]]


@dataclass(slots=True)
class _Entry:
    update: LatestUpdate
    shard_id: str
    batch: int
    due: float  # when it may be written (the book's clock)


class LatestBook:
    """Waiting updates (one per symbol, oldest first) and, per shard, the batches they block.

    Thread-safe; no I/O. Batches are numbered by the caller, increasing within a shard.
    """

    def __init__(
        self, metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._offers = 0  # offers and releases so far: what wakes a pump waiting for work
        self._cond = threading.Condition()
        self._waiting: dict[str, _Entry] = {}  # insertion order = the order they are written in
        self._blocking: dict[str, dict[int, int]] = {}  # shard -> batch -> waiting or in flight
        self._error: BaseException | None = None
        self._closed = False
        self._metrics = metrics
        self._watchers: list[_Watcher] = []  # asyncio waiters, woken thread-safely
        self._on_offer: Callable[[], None] = lambda: None

    # -- the processors' side ------------------------------------------------------------

    def offer(
        self, shard_id: str, batch: int, updates: Iterable[LatestUpdate], hold: float = 0.0
    ) -> None:
        """Queue a batch's updates; an older or equal update than one waiting is covered by it.
        ``hold``: seconds they may wait for newer ones (a catching-up shard's), counted from
        when their symbol's row started waiting."""
        coalesced = 0
        with self._cond:
            self._raise_if_failed()
            due = self._clock() + hold
            for update in updates:
                entry = self._waiting.get(update.symbol)
                if entry is None:
                    self._waiting[update.symbol] = _Entry(update, shard_id, batch, due)
                    self._block(shard_id, batch)
                    continue
                coalesced += 1
                if entry.update.event_time >= update.event_time:
                    continue  # the waiting one is newer: it will be written instead
                self._unblock(entry.shard_id, entry.batch)
                entry.update, entry.shard_id, entry.batch = update, shard_id, batch
                entry.due = min(entry.due, due)  # a fresh update is not held behind an old one
                self._block(shard_id, batch)
            self._offers += 1
            self._changed()
        self._count(Counters.LATEST_COALESCED, coalesced)
        self._on_offer()

    def release(self, shard_id: str | None = None) -> None:
        """The shard's held updates (every shard's: None) may be written now: it reached its
        tip, ended or stops, or everything is to be drained."""
        with self._cond:
            now = self._clock()
            for entry in self._waiting.values():
                if (shard_id is None or entry.shard_id == shard_id) and entry.due > now:
                    entry.due = now
            self._offers += 1
            self._changed()

    def set_offer_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the offering thread) after every ``offer``."""
        self._on_offer = listener

    def first_blocked(self, shard_id: str) -> int | None:
        """The shard's oldest batch with updates not yet written (None: every batch is clear);
        raises the pump's error, since then nothing after it will become durable."""
        with self._cond:
            self._raise_if_failed()
            return self._first_blocked(shard_id)

    async def until_clear(self, shard_id: str, batch: int, within: float | None) -> bool:
        """Await until no batch up to ``batch`` of the shard is blocked; False when that took
        longer than ``within`` seconds."""
        return await self._until(lambda: self._clear(shard_id, batch), within)

    async def until_empty(self) -> None:
        """Await until nothing is waiting or being written, for any shard."""
        await self._until(lambda: not self._blocking, None)

    async def until_work(self) -> None:
        """Await until an update is due, or another offer came (or the book closed or failed):
        the pump's wait."""
        with self._cond:
            offers, delay = self._offers, self._due_in()
        if delay is None or delay > 0:
            await self._until(lambda: self._offers != offers or self._closed, delay)

    def due_in(self) -> float | None:
        """Seconds until the first waiting update may be written (0: one may now; None: none
        waits)."""
        with self._cond:
            return self._due_in()

    def wait_clear(self, shard_id: str, batch: int, timeout: float | None) -> bool:
        """Blocking ``until_clear``, for callers without an event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def clear() -> bool:
            return self._clear(shard_id, batch)

        with self._cond:
            while not clear():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_empty(self) -> None:
        """Blocking ``until_empty``, for callers without an event loop."""
        with self._cond:
            while self._blocking:
                self._raise_if_failed()
                self._cond.wait()
            self._raise_if_failed()

    def drop(self, shard_id: str) -> int:
        """Forget the shard's waiting updates (its lease was lost: the next owner re-reads them
        from the checkpoint, which they block); returns how many."""
        with self._cond:
            dropped = [s for s, e in self._waiting.items() if e.shard_id == shard_id]
            for symbol in dropped:
                entry = self._waiting.pop(symbol)
                self._unblock(entry.shard_id, entry.batch)
            self._changed()
            return len(dropped)

    # -- the pump's side -----------------------------------------------------------------

    def take(self, limit: int) -> list[_Entry] | None:
        """Up to ``limit`` oldest waiting updates that are due (none: an empty list); None once
        closed or failed (nothing written after a failure can become durable)."""
        with self._cond:
            if self._closed or self._error is not None:
                return None
            now = self._clock()
            symbols = []
            for symbol, entry in self._waiting.items():
                if entry.due <= now:
                    symbols.append(symbol)
                    if len(symbols) == limit:
                        break
            taken = [self._waiting.pop(symbol) for symbol in symbols]
            self._gauge()
            return taken

    def put_back(self, entries: Sequence[_Entry]) -> None:
        """Entries taken but whose write was abandoned (outcome unknown): waiting again,
        unless a newer update of the symbol waits, which covers them."""
        with self._cond:
            for entry in entries:
                waiting = self._waiting.get(entry.update.symbol)
                if waiting is None:
                    self._waiting[entry.update.symbol] = entry
                elif waiting.update.event_time >= entry.update.event_time:
                    self._unblock(entry.shard_id, entry.batch)
                else:
                    self._unblock(waiting.shard_id, waiting.batch)
                    self._waiting[entry.update.symbol] = entry
            self._gauge()
            self._changed()

    def done(self, entries: Sequence[_Entry]) -> None:
        """The entries' writes are durable (applied or found stale)."""
        with self._cond:
            for entry in entries:
                self._unblock(entry.shard_id, entry.batch)
            self._changed()

    def fail(self, error: BaseException) -> None:
        """Writing failed for good: every waiter and later caller gets the error."""
        with self._cond:
            self._error = error
            self._changed()

    def close(self) -> None:
        """Stop handing out work; waiters get an error unless already clear."""
        with self._cond:
            self._closed = True
            if self._error is None:
                self._error = DynamoDbRetriesExhaustedError("latest-table writer closed")
            self._changed()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # -- internals -----------------------------------------------------------------------

    async def _until(self, condition: Callable[[], bool], within: float | None) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def ready() -> bool:  # lock held
            return self._error is not None or condition()

        watcher = (loop, future, ready)
        with self._cond:
            if ready():
                self._raise_if_failed()
                return True
            self._watchers.append(watcher)
        try:
            await asyncio.wait({future}, timeout=within)
        finally:
            with self._cond:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)
        with self._cond:
            self._raise_if_failed()
            return condition()

    def _changed(self) -> None:
        """Wake blocking waiters, and the asyncio waiters whose condition now holds (lock held)."""
        self._cond.notify_all()
        still: list[_Watcher] = []
        for loop, future, ready in self._watchers:
            if not ready():
                still.append((loop, future, ready))
                continue
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits it any more
                loop.call_soon_threadsafe(_wake, future)
        self._watchers = still

    # -- internals (lock held) -----------------------------------------------------------

    def _clear(self, shard_id: str, batch: int) -> bool:
        self._raise_if_failed()
        first = self._first_blocked(shard_id)
        return first is None or first > batch

    def _block(self, shard_id: str, batch: int) -> None:
        batches = self._blocking.setdefault(shard_id, {})
        batches[batch] = batches.get(batch, 0) + 1
        self._gauge()

    def _unblock(self, shard_id: str, batch: int) -> None:
        batches = self._blocking[shard_id]
        batches[batch] -= 1
        if not batches[batch]:
            del batches[batch]
            if not batches:
                del self._blocking[shard_id]
        self._gauge()

    def _due_in(self) -> float | None:
        if not self._waiting:
            return None
        now = self._clock()
        return max(0.0, min(entry.due for entry in self._waiting.values()) - now)

    def _first_blocked(self, shard_id: str) -> int | None:
        return min(self._blocking.get(shard_id, {}), default=None)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.set(Gauges.LATEST_WAITING, len(self._waiting))

    def _count(self, name: Counters, amount: int) -> None:
        if self._metrics is not None and amount:
            self._metrics.inc(name, amount)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LatestPump:
    """Writes the book's oldest waiting updates with ``concurrency`` calls in flight, each
    lane taking the next update as soon as its own call ended (side by side on the writer's
    pool), as asyncio tasks of the loop that offers them, started on demand.

    A loop that ends (asyncio.run returning) takes its tasks along: the updates in flight are
    put back in the book, and the next loop to offer or ``drain`` starts new ones.
    """

    def __init__(
        self,
        writer: AsyncDynamoDbSink,
        metrics: Metrics | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        dead_letters: DeadLetterStore | None = None,
        dead_letter_source: str = "dynamodb-latest",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1: {concurrency}")
        self.book = LatestBook(metrics)
        self._writer = writer
        self._metrics = metrics
        self._concurrency = concurrency
        self._dead_letters = dead_letters
        self._source = dead_letter_source
        self._task: asyncio.Task[None] | None = None
        self.book.set_offer_listener(self.start)

    def start(self) -> None:
        """Make sure the pump runs in the current event loop (no loop: nothing to do)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._task = loop.create_task(self._run(), name="latest-pump")

    async def drain(self) -> None:
        """Until every queued update is written, held ones too (raises the pump's error)."""
        self.book.release()
        self.start()
        await self.book.until_empty()

    async def _run(self) -> None:
        # Cancelling the pump (its loop ending) cancels every lane, each putting its update back.
        async with asyncio.TaskGroup() as lanes:
            for lane in range(self._concurrency):
                lanes.create_task(self._lane(), name=f"latest-pump-{lane}")

    async def _lane(self) -> None:
        """One call in flight at a time: the oldest waiting update, written, then the next."""
        while (entries := self.book.take(1)) is not None:
            if not entries:
                try:
                    await self.book.until_work()
                except Exception:  # noqa: BLE001 - the book failed or closed: its waiters raise it
                    return
                continue
            try:
                refused = await self._writer.put_latest([entry.update for entry in entries])
                if refused:
                    await self._dead_letter(refused)
            except asyncio.CancelledError:
                self.book.put_back(entries)  # outcome unknown: written again by the next pump
                raise
            except Exception as err:  # noqa: BLE001 - handed to the processors, who raise it
                log.error("latest-table writes failed: %s", err)
                self.book.fail(err)
                return
            self.book.done(entries)
            if self._metrics is not None:
                self._metrics.observe_ages(
                    Histograms.LATEST_AGE_SECONDS,
                    (int(entry.update.attributes["received_at"]["N"]) for entry in entries),
                )

    async def _dead_letter(self, refused: Sequence[Refused]) -> None:
        """Keep each refused update with its reason; without a store, fail as before."""
        for update, reason in refused:
            log.error(
                "latest-table update for %s refused, dead-lettered: %s", update.symbol, reason
            )
        if self._dead_letters is None:
            raise DynamoDbRetriesExhaustedError(f"latest-table update refused: {refused[0][1]}")
        letters = [
            DeadLetter(
                json.dumps(update.attributes, sort_keys=True).encode(),
                f"latest-table update refused: {reason}",
                int(update.attributes["received_at"]["N"]),
            )
            for update, reason in refused
        ]
        await run_in(DEAD_LETTERS, self._dead_letters.put, self._source, letters, None)
        if self._metrics is not None:
            self._metrics.inc(Counters.DEAD_LETTERS, len(letters))
