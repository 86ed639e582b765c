"""An event loop on virtual time: when nothing is ready, the clock jumps to the next timer.

``run(coro)`` runs a coroutine on it. Sleeps, ``wait_for`` timeouts and ``loop.time()`` all
follow the virtual clock, so a test of a minute of lease protocol runs in milliseconds and its
interleaving does not depend on how busy the machine is. Before each jump the loop polls for
real I/O for a moment, so a call finishing in a thread (a sink write released by the test) is
still seen.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
_REAL_POLL_SECONDS = 0.002


class _JumpingSelector(selectors.DefaultSelector):
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(0)
        events = super().select(_REAL_POLL_SECONDS)
        if events or timeout is None:
            return events or super().select(None)
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` is virtual and starts at 0."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on a VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
