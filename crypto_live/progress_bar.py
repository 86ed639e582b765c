"""The rich progress bar (stderr) of the long commands: `lake` jobs, `backfill`, `candles gaps`."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from rich.progress import Progress


class StderrProgressBar:
    """Shown on stderr while the ``with`` block runs (nothing when not ``enabled``): the task's
    description, a bar, done of total, the task's ``unit`` field (with ``unit_column``), the
    time elapsed. Subclasses add the tasks their callers report to."""

    def __init__(self, enabled: bool, *, unit_column: bool = False) -> None:
        # rich is imported here, not at module level: `crypto-live --help` stays fast.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns: list[ProgressColumn] = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
        ]
        if unit_column:
            columns.append(TextColumn("{task.fields[unit]}"))
        columns.append(TimeElapsedColumn())
        self._progress: Progress = Progress(
            *columns, console=Console(stderr=True), disable=not enabled
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()
