"""Progress of long backfills and waits on a rich progress bar (stderr), as the lake jobs show."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class RichProgress:
    """One bar per ``phase``: backfill (candles published of the minutes wanted), then the
    wait for the consumer (candles written of those published)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._task: TaskID | None = None
        self._description = "backfill"

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()

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
