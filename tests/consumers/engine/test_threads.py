"""The consumers' daemon thread pool: a hung call never holds up shutdown or the exit."""

from __future__ import annotations

import asyncio
import threading

import pytest

from consumers.engine.threads import DaemonThreadPool, in_thread


def test_shutdown_does_not_wait_for_a_hung_call_and_queued_calls_still_run() -> None:
    pool = DaemonThreadPool(1, "t")
    release = threading.Event()
    hung = pool.submit(release.wait, 30)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=True)  # returns at once although a call is running
    assert not hung.done()
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t-"))
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    release.set()
    assert hung.result(timeout=5) is True
    assert queued.result(timeout=5) == "ran"  # its waiter woke


def test_threads_grow_with_pending_calls_up_to_the_bound() -> None:
    pool = DaemonThreadPool(3, "grow")
    release = threading.Event()
    futures = [pool.submit(release.wait, 30) for _ in range(5)]
    assert len(pool._threads) == 3
    release.set()
    assert all(f.result(timeout=5) for f in futures)
    pool.shutdown()


def test_in_thread_returns_raises_and_can_be_abandoned() -> None:
    async def main() -> None:
        assert await in_thread(lambda a, b: a + b, 1, b=2) == 3
        with pytest.raises(ValueError, match="bad"):
            await in_thread(_raise)
        never = threading.Event()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(in_thread(never.wait, 5), timeout=0.1)
        never.set()

    asyncio.run(main())


def _raise() -> None:
    raise ValueError("bad")
