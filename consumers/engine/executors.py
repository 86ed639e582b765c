"""Where the engine runs its blocking calls: one bounded daemon pool per purpose.

Lease calls (renewals, takes, checkpoints, releases) have their own pool, Kinesis reads
theirs and dead letters theirs; sinks write on theirs (``core.threads.SINK_WRITES``). So a
sink stuck in minutes of retries can hold every sink thread and still no renewal waits.
Tests swap in ``EngineExecutors.inline()`` to run in-memory fakes on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, Protocol, TypeVar

from core.threads import DEAD_LETTERS, LEASE_CALLS, SHARD_READS, run_in

_P = ParamSpec("_P")
_T = TypeVar("_T")


class BlockingRunner(Protocol):
    """Awaits one blocking call somewhere that does not block the event loop."""

    async def __call__(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T: ...


class PoolRunner:
    """Runs calls on the process's shared daemon pool of ``purpose`` (``core.threads``)."""

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose

    async def __call__(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await run_in(self.purpose, fn, *args, **kwargs)


class InlineRunner:
    """Runs the call on the event loop itself: only for non-blocking in-memory fakes."""

    async def __call__(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return fn(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class EngineExecutors:
    """The engine's runner per purpose."""

    leases: BlockingRunner = field(default_factory=lambda: PoolRunner(LEASE_CALLS))
    reads: BlockingRunner = field(default_factory=lambda: PoolRunner(SHARD_READS))
    dead_letters: BlockingRunner = field(default_factory=lambda: PoolRunner(DEAD_LETTERS))

    @classmethod
    def inline(cls) -> EngineExecutors:
        """Every call on the event loop (deterministic tests against in-memory fakes)."""
        return cls(InlineRunner(), InlineRunner(), InlineRunner())
