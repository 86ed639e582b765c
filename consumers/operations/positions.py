"""Where a replay or a checkpoint reset starts and ends (pure parsing and alignment)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import ConfigError

_SHARD_POSITION = re.compile(r"^(shardId-\d+):(\d+)(?::(\d+))?$")


@dataclass(frozen=True, slots=True)
class StartPosition:
    """A lease checkpoint to start from, for every shard or for one."""

    checkpoint: str  # TRIM_HORIZON, LATEST, AT_TIMESTAMP:<iso>, or a sequence number
    checkpoint_sub: int = -1  # -1: the whole Kinesis record, all its sub-records included
    shard_id: str | None = None  # set for shard:sequence positions
    aligned_from: datetime | None = None  # the time asked for, when aligned to a window

    def describe(self) -> str:
        if self.shard_id:
            return f"{self.shard_id} at sequence {self.checkpoint}"
        if self.aligned_from is not None:
            return f"{self.checkpoint} (aligned from {self.aligned_from.isoformat()})"
        return self.checkpoint


def parse_time(text: str, option: str) -> datetime:
    """An ISO time; naive times are UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise ConfigError(f"invalid {option} (got {text!r}): expected an ISO time") from err
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def window_floor(when: datetime, window_seconds: int) -> datetime:
    """Start of the MAX_BATCH_TIMEOUT-aligned window holding ``when``."""
    ms = int(when.timestamp() * 1000)
    window = window_seconds * 1000
    return datetime.fromtimestamp(ms // window * window / 1000, UTC)


def window_ceil_ms(when: datetime, window_seconds: int) -> int:
    """End of the window holding ``when``, in epoch ms (exclusive)."""
    window = window_seconds * 1000
    return (int(when.timestamp() * 1000) // window + 1) * window


def parse_start(text: str, *, option: str, align_seconds: int | None = None) -> StartPosition:
    """TRIM_HORIZON, LATEST, AT_TIMESTAMP:<iso>, <iso>, or shardId-N:<sequence>[:<sub>].

    With ``align_seconds`` (the S3 sink) a time moves back to its window's start: the first
    record at or after a window boundary always begins a batch, so re-written objects are
    byte-identical to the ones a clean run wrote.
    """
    if text in ("TRIM_HORIZON", "LATEST"):
        return StartPosition(text)
    if match := _SHARD_POSITION.match(text):
        shard, sequence, sub = match.groups()
        return StartPosition(sequence, int(sub) - 1 if sub else -1, shard_id=shard)
    when = parse_time(text.removeprefix("AT_TIMESTAMP:"), option)
    if align_seconds:
        start = window_floor(when, align_seconds)
        return StartPosition(f"AT_TIMESTAMP:{start.isoformat()}", aligned_from=when)
    return StartPosition(f"AT_TIMESTAMP:{when.isoformat()}")
