"""What each job already did: one small JSON object per job and day under ``meta/``.

A unit of work (an hour, or a day for the report) is recorded with a fingerprint of its inputs
(keys and ETags) and the outputs it wrote. A scheduled run recomputes a unit only when its
fingerprint changed (late data arrived, an upstream output was rewritten) and skips it
otherwise, so re-running changes nothing. The manifest holds no timestamps: recording the same
work twice writes the same bytes. One writer per job at a time (a scheduled task, not a fleet).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from crypto_live.lake import LakeError
from crypto_live.lake.layout import day_of_hour, manifest_key, unit_name
from crypto_live.lake.store import JSON_CONTENT_TYPE, LakeStore

MANIFEST_VERSION: Final = 1


def fingerprint(*parts: Any) -> str:
    """A stable digest of JSON-able parts (job version, options, input keys and ETags)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """One finished unit: its inputs' fingerprint, outputs (key -> ETag) and counts."""

    inputs: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    stats: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": dict(sorted(self.outputs.items())),
            "stats": dict(sorted(self.stats.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UnitRecord:
        return cls(
            str(data["inputs"]),
            {str(k): str(v) for k, v in data.get("outputs", {}).items()},
            {str(k): int(v) for k, v in data.get("stats", {}).items()},
        )


@dataclass
class Manifest:
    """The units one job finished for one day."""

    job: str
    day: date
    units: dict[str, UnitRecord] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data = {
            "version": MANIFEST_VERSION,
            "job": self.job,
            "date": self.day.isoformat(),
            "units": {name: self.units[name].to_json() for name in sorted(self.units)},
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, body: bytes, job: str, day: date) -> Manifest:
        try:
            data = json.loads(body)
            if data.get("version") != MANIFEST_VERSION or data.get("job") != job:
                raise ValueError(f"version {data.get('version')} of job {data.get('job')}")
            units = {str(k): UnitRecord.from_json(v) for k, v in data["units"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise LakeError(f"unreadable manifest {manifest_key(job, day)}: {err}") from err
        return cls(job, day, units)


class ManifestBook:
    """Manifests read through a LakeStore once per run, and written back only when changed."""

    def __init__(self, store: LakeStore, job: str) -> None:
        self._store = store
        self._job = job
        self._loaded: dict[date, Manifest] = {}
        self._saved: dict[date, bytes] = {}

    def manifest(self, day: date) -> Manifest:
        if day not in self._loaded:
            body = self._store.get(manifest_key(self._job, day))
            if body is None:
                self._loaded[day] = Manifest(self._job, day)
                self._saved[day] = b""
            else:
                self._loaded[day] = Manifest.from_bytes(body, self._job, day)
                self._saved[day] = body
        return self._loaded[day]

    def unit(self, day: date, name: str) -> UnitRecord | None:
        return self.manifest(day).units.get(name)

    def hour(self, hour: int) -> UnitRecord | None:
        return self.unit(day_of_hour(hour), unit_name(hour))

    def record(self, day: date, name: str, record: UnitRecord) -> bool:
        """Store a finished unit and write the day's manifest if it changed; True if written."""
        manifest = self.manifest(day)
        manifest.units[name] = record
        body = manifest.to_bytes()
        if body == self._saved[day]:
            return False
        self._store.put(manifest_key(self._job, day), body, JSON_CONTENT_TYPE)
        self._saved[day] = body
        return True

    def record_hour(self, hour: int, record: UnitRecord) -> bool:
        return self.record(day_of_hour(hour), unit_name(hour), record)
