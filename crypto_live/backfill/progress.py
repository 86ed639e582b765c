"""Progress of long backfills and waits on a rich progress bar (stderr), as the lake jobs show."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crypto_live.progress_bar import StderrProgressBar

if TYPE_CHECKING:
    from rich.progress import TaskID


class RichProgress(StderrProgressBar):
    """One bar per ``phase``: backfill (candles published of the minutes wanted), then the
    wait for the consumer (candles written of those published)."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled)
        self._task: TaskID | None = None
        self._description = "backfill"

    def phase(self, description: str) -> None:
        """Name the next bar (it appears with its total)."""
        self._description = description
        self._task = None

    def total(self, minutes: int) -> None:
        self._task = self._progress.add_task(self._description, total=minutes)

    def published(self, count: int) -> None:
        self.done(count)

    def done(self, count: int, total: int | None = None) -> None:
        if self._task is None:
            self.total(total or 0)
        assert self._task is not None
        self._progress.update(self._task, completed=count, total=total)
