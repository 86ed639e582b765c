"""Daemon thread pools for blocking AWS calls, one bounded pool per purpose.

Every blocking boto3 call of the producer and the consumers runs on one of these pools and is
awaited from asyncio; no thread ever waits on another thread. ``asyncio.to_thread`` is not used:
its default executor is shared by everything (a few minutes-long S3 retry loops could take every
thread a lease renewal needs), ``asyncio.run`` waits for it, and its threads are joined at
interpreter exit, so one call hanging on a partitioned network would keep the process alive.
These pools' threads are daemons and ``shutdown`` never waits for a running call: its outcome is
the caller's to deal with (a checkpoint covers only what was confirmed; the producer dead-letters
entries whose put never answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Work = tuple[Future[Any], Callable[[], Any]]

# The purposes, each with its own bound: hung calls of one purpose (each holds a thread until its
# botocore timeouts end) never take the threads another purpose needs.
PRODUCER_PUTS: Final = "producer-puts"  # PutRecords and ListShards (owned by each Publisher)
DEAD_LETTERS: Final = "dead-letters"  # dead-letter PutObject, producer and consumers
LEASE_CALLS: Final = "lease-calls"  # lease table reads, takes, renewals, checkpoints
SHARD_READS: Final = "shard-reads"  # GetShardIterator, GetRecords, ListShards
SINK_WRITES: Final = "sink-writes"  # DynamoDB and S3 sink writes

POOL_SIZES: Final[dict[str, int]] = {
    PRODUCER_PUTS: 6,
    DEAD_LETTERS: 4,
    LEASE_CALLS: 16,
    SHARD_READS: 32,
    SINK_WRITES: 16,
}


class DaemonThreadPool(Executor):
    """At most ``max_workers`` daemon threads, started on demand, taking calls in order."""

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1: {max_workers}")
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0  # submitted and not finished
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def name(self) -> str:
        return self._name

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self._name}: cannot schedule calls after shutdown")
            self._queue.put((future, functools.partial(fn, *args, **kwargs)))
            self._pending += 1
            if self._pending > len(self._threads) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Await ``fn(*args, **kwargs)`` run in this pool; cancelling the await abandons it."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls. Queued calls still run (so their waiters wake) unless
        ``cancel_futures``, which cancels them; running calls are never waited for, whatever
        ``wait`` says."""
        with self._lock:
            self._shutdown = True
            threads = len(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
                    # Wakes concurrent.futures.wait() callers too, which cancel() alone does not.
                    item[0].set_running_or_notify_cancel()
                    self._finished()
        for _ in range(threads):
            self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                self._finished()
                continue
            try:
                result = call()
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on it
                self._finished()  # before the waiter wakes, so its next call reuses this thread
                future.set_exception(err)
            else:
                self._finished()
                future.set_result(result)
            del future, call, item

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1


_shared: dict[str, DaemonThreadPool] = {}
_shared_lock = threading.Lock()


def shared_pool(purpose: str) -> DaemonThreadPool:
    """The process's pool for ``purpose`` (one of POOL_SIZES), created on first use and never
    shut down (its threads are daemons)."""
    with _shared_lock:
        pool = _shared.get(purpose)
        if pool is None:
            pool = _shared[purpose] = DaemonThreadPool(POOL_SIZES[purpose], purpose)
        return pool


async def run_in(purpose: str, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Await ``fn(*args, **kwargs)`` on the shared pool of ``purpose``."""
    return await shared_pool(purpose).run(fn, *args, **kwargs)


class StopSignal:
    """A thread-safe flag that asyncio code can sleep on: ``set`` (from any thread) ends every
    ``sleep`` at once, in whatever loop it runs. Retry backoffs wait on it, not on a thread."""

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            self._set = True
            sleepers, self._sleepers = self._sleepers, set()
        for loop, future in sleepers:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody sleeps there now
                loop.call_soon_threadsafe(_resolve, future)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the signal was set (before or meanwhile)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        sleeper = (loop, future)
        with self._lock:
            if self._set:
                return True
            self._sleepers.add(sleeper)
        try:
            await asyncio.wait({future}, timeout=max(0.0, seconds))
        finally:
            with self._lock:
                self._sleepers.discard(sleeper)
        return self._set


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
