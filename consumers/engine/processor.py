"""The interface between the shard engine and a sink (KCL's record processor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consumers.engine.records import ConsumedRecord, Position


class ShardProcessor(Protocol):
    """One instance per owned shard. Every method returns the position up to which all
    records given so far are durable in the sink (the engine checkpoints it), or None when
    nothing new is durable. Records arrive in shard order, never twice within one lease."""

    async def process(self, records: Sequence[ConsumedRecord]) -> Position | None:
        """Handle the records of one GetRecords call (may be empty at the tip of the shard)."""
        ...

    async def at_tip(self, now_ms: int) -> Position | None:
        """Called when a read returned nothing new (caught up); time-based flushes go here."""
        ...

    async def shard_ended(self) -> Position | None:
        """The shard is closed and fully read: make everything durable before SHARD_END."""
        ...

    async def shutdown(self) -> Position | None:
        """Graceful stop (SIGTERM) while still owning the lease: finish in-flight writes."""
        ...

    def abandon(self) -> None:
        """The lease was lost: drop buffers without writing; another worker takes over."""
        ...


class ProcessorFactory(Protocol):
    """Makes the processor for one shard lease."""

    def __call__(self, shard_id: str) -> ShardProcessor: ...
