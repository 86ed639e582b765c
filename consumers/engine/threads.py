"""Daemon threads for the consumers' blocking AWS calls, which must never hold up an exit.

``asyncio.to_thread`` runs on the loop's default executor: ``asyncio.run`` waits for it, its
threads are joined at interpreter exit, and it has only ``cpu + 4`` of them. Under a network
partition a call hangs for its botocore timeouts times its attempts, so a SIGTERM waited for
every hung call, and a few hung sink writes took every thread a lease renewal needed. Calls run
here instead: daemon threads, plenty of them, and ``shutdown`` never waits for a running call
(its outcome is unknown anyway; the checkpoint only covers what was confirmed).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Work = tuple[Future[Any], Callable[[], Any]]

# Hung calls each hold a thread until their timeouts end; the rest must still find one.
IO_THREADS: Final = 64


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

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; queued ones still run (so their waiters wake), running ones are
        never waited for, whatever ``wait`` says."""
        with self._lock:
            self._shutdown = True
            for _ in self._threads:
                self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as err:  # noqa: BLE001 - handed to whoever waits on it
                    future.set_exception(err)
            del future, call, item
            with self._lock:
                self._pending -= 1


_pool: DaemonThreadPool | None = None
_pool_lock = threading.Lock()


def io_pool() -> DaemonThreadPool:
    """The process's pool for consumer I/O (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = DaemonThreadPool(IO_THREADS, "consumer-io")
        return _pool


async def in_thread(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread`` on a daemon thread; cancelling the await abandons the call."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(io_pool(), functools.partial(fn, *args, **kwargs))
