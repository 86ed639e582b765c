"""Exponential backoff with full jitter, for every retry loop of every package."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Beyond this, base * 2**attempt exceeds any sane cap; clamping avoids float overflow.
_MAX_EXPONENT: Final = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt)) seconds."""

    base: float = 0.05
    cap: float = 5.0

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= 0):
            raise ValueError(f"backoff needs base > 0 and cap >= 0: {self.base}, {self.cap}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to sleep before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0: {attempt}")
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))
        return rand() * ceiling
