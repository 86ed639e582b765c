"""The three lake jobs' shared parts: progress reporting, results, writing a unit's outputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from crypto_live.lake import LakeError
from crypto_live.lake.manifest import UnitRecord
from crypto_live.lake.parquet import from_parquet
from crypto_live.lake.reader import SweepCounts
from crypto_live.lake.store import LakeStore, put_if_changed


class JobProgress(Protocol):
    """Told how many units a job has, then about each one as it finishes."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, unit: str) -> None: ...


class NoProgress:
    def start(self, description: str, total: int) -> None:
        return None

    def advance(self, unit: str) -> None:
        return None


@dataclass
class JobResult:
    """What a run did; ``summary`` is the line the CLI prints."""

    job: str
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # skipped though its inputs changed
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    objects_read: int = 0
    bad_lines: int = 0
    bad_objects: int = 0
    stray_rows: int = 0
    peak_pending_rows: int = 0

    def record_sweep(self, counts: SweepCounts) -> None:
        """Take the raw sweep's totals: objects read, what was left out, peak rows held."""
        self.objects_read = counts.objects_read
        self.bad_lines = counts.bad_lines
        self.bad_objects = counts.bad_objects
        self.stray_rows = counts.stray_rows
        self.peak_pending_rows = counts.peak_pending_rows

    def summary(self) -> str:
        parts = [
            f"{self.job}: {len(self.computed)} computed, {len(self.skipped)} up to date",
            f"{self.written} objects written, {self.unchanged} unchanged, {self.deleted} deleted",
            f"{self.rows_in:,} rows in, {self.rows_out:,} rows out",
        ]
        if self.duplicates:
            parts.append(f"{self.duplicates:,} duplicates dropped")
        if self.bad_lines or self.bad_objects:
            parts.append(f"{self.bad_lines} bad lines and {self.bad_objects} bad objects left out")
        if self.stray_rows:
            parts.append(f"{self.stray_rows} rows too far from their hour folder (--slack-hours)")
        if self.stale:
            parts.append(f"stale, rerun with --force: {', '.join(self.stale)}")
        return "; ".join(parts)


Output = tuple[bytes, str]  # body, content type


def write_outputs(
    store: LakeStore,
    outputs: Mapping[str, Output],
    previous: UnitRecord | None,
    result: JobResult,
) -> dict[str, str]:
    """Write a unit's outputs (objects already holding the bytes are left alone) and delete
    what the unit's previous run wrote that it no longer produces; returns key -> ETag."""
    etags: dict[str, str] = {}
    for key in sorted(outputs):
        body, content_type = outputs[key]
        etags[key], written = put_if_changed(store, key, body, content_type)
        if written:
            result.written += 1
        else:
            result.unchanged += 1
    for key in sorted(set(previous.outputs) - set(outputs) if previous else ()):
        store.delete(key)
        result.deleted += 1
    return etags


def read_parquet(store: LakeStore, key: str, columns: Iterable[str] | None = None) -> Any:
    """A Parquet object a manifest lists; LakeError when it is gone."""
    body = store.get(key)
    if body is None:
        raise LakeError(f"{key} is listed in a manifest but missing: rerun the job that writes it")
    return from_parquet(body, list(columns) if columns else None)
