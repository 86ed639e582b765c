"""A thread pool of daemon threads for blocking AWS calls that must never hold up the exit.

``asyncio.to_thread`` runs in the loop's default executor, which ``asyncio.run`` waits for, and
``ThreadPoolExecutor`` threads are joined at interpreter exit: one call hanging on a partitioned
network keeps the process alive for as long as the call hangs. This pool's threads are daemons,
and ``shutdown`` never waits for a running call: its outcome is the caller's to deal with.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

_WorkItem = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """At most ``max_workers`` daemon threads, started on demand, sharing one work queue."""

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be positive: {max_workers}")
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{self._name}: cannot schedule calls after shutdown")
            future: Future[_T] = Future()
            self._queue.put((future, fn, args, kwargs))
            if len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            return future

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Await ``fn(*args)`` run in this pool; cancelling the await abandons the call."""
        return await asyncio.get_running_loop().run_in_executor(self, fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; ``cancel_futures`` drops queued ones. Running calls are never
        waited for unless ``wait`` (then idle threads are joined, busy ones are not)."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join(timeout=0)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(err)
            else:
                future.set_result(result)
            del future, fn, args, kwargs, item
