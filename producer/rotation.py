"""Pure rules of the websocket edge: when to reconnect, when to rotate, what a rotation repeats.

No I/O and no clock of their own: the source passes ``now`` (monotonic seconds) in, so every
rule is unit-tested without waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from core.backoff import Backoff

# A connection that stayed up this long, or delivered a frame, was a good one: its end is
# followed by an immediate reconnect. Shorter-lived, frameless ones count as failures.
HEALTHY_CONNECTION_SECONDS = 5.0


@dataclass
class ReconnectPolicy:
    """Reconnect at once after a good connection ends; back off with jitter on repeated failures."""

    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, cap=30.0))
    rand: Callable[[], float] = random.random
    failures: int = 0  # consecutive failed attempts (refused, or a connection that died young)

    def connection_ended(self, lived_seconds: float, frames: int) -> float:
        """Seconds to wait before the next attempt after a connection ended."""
        if frames > 0 or lived_seconds >= HEALTHY_CONNECTION_SECONDS:
            self.failures = 0
            return 0.0
        return self.attempt_failed()

    def attempt_failed(self) -> float:
        """Seconds to wait after a connection attempt failed (or a connection died young)."""
        delay = self.backoff.delay(self.failures, self.rand)
        self.failures += 1
        return delay


def event_key(parsed: Any) -> Hashable | None:
    """(stream, event time) of a combined-stream frame; None when it has none (never deduped).

    An all-market array carries one event per symbol: its key is the stream with every
    (symbol, event time) pair in it. A kline event adds its candle's open time and closed
    flag: one event time may carry the minute that just closed and the next one's first kline
    (or several closed minutes, after a stall), which are different events.
    """
    if not isinstance(parsed, dict):
        return None
    stream, data = parsed.get("stream"), parsed.get("data")
    if not isinstance(stream, str):
        return None
    if isinstance(data, dict):
        event_time = data.get("E")
        if not isinstance(event_time, int):
            return None
        kline = data.get("k")
        if kline is None:
            return (stream, event_time)
        open_time = kline.get("t") if isinstance(kline, dict) else None
        closed = kline.get("x") if isinstance(kline, dict) else None
        if type(open_time) is int and type(closed) is bool:
            return (stream, event_time, open_time, closed)
        return None  # a malformed kline: never deduplicated away
    if isinstance(data, list) and data:
        pairs = tuple(
            (_hashable(item.get("s")), _hashable(item.get("E"))) if isinstance(item, dict) else None
            for item in data
        )
        return (stream, pairs)
    return None


def _hashable(value: object) -> Hashable:
    """A JSON scalar as it is; anything else (a list, an object) by its repr, so a malformed
    element cannot make the key unhashable."""
    return value if value is None or isinstance(value, str | int | float) else repr(value)


class OverlapFilter:
    """Keeps each event once while two connections deliver the same streams (a rotation).

    Active from the moment the new connection opens until ``linger`` seconds after the old
    one ended: frames of the new one still queued behind the old one's end are checked too.
    The key set lives only that long, so memory is bounded by the overlap, not the run.
    """

    def __init__(self, linger_seconds: float) -> None:
        self._linger = linger_seconds
        self._seen: set[Hashable] = set()
        self._active = False
        self._until: float | None = None  # set once the old connection ended
        self.duplicates = 0

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        """A rotation began: remember keys from now on."""
        self._active = True
        self._until = None

    def old_connection_ended(self, now: float) -> None:
        """The retiring connection delivered its last frame; stop after the linger."""
        if self._active:
            self._until = now + self._linger

    def admit(self, key: Hashable | None, now: float) -> bool:
        """True when this frame should be handed on (first sighting, or no overlap)."""
        if self._active and self._until is not None and now >= self._until:
            self._active = False
            self._seen.clear()
        if not self._active or key is None:
            return True
        if key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(key)
        return True


@dataclass(frozen=True, slots=True)
class RotationPlan:
    """When a connection is replaced on purpose, and how long the two overlap."""

    rotate_after_seconds: float
    settle_seconds: float = 3.0  # after the new connection's first frame, close the old one
    max_overlap_seconds: float = 10.0  # quiet streams: close the old one anyway after this

    def due(self, opened_at: float, now: float) -> bool:
        """Time to open the next connection."""
        return now - opened_at >= self.rotate_after_seconds

    def retire_old(self, new_opened_at: float, first_frame_at: float | None, now: float) -> bool:
        """The new connection has settled: the old one can be closed without a gap."""
        if first_frame_at is not None and now - first_frame_at >= self.settle_seconds:
            return True
        return now - new_opened_at >= self.max_overlap_seconds
