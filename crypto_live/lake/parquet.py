"""Parquet bytes in and out: Snappy, fixed writer options, so equal tables give equal bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from crypto_live.lake.arrow import pa, pq


def to_parquet(table: Any) -> bytes:
    """One Snappy Parquet file; no timestamps inside, so a re-run rewrites identical bytes."""
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="snappy",
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1_000_000,
    )
    return sink.getvalue()


def from_parquet(body: bytes, columns: Sequence[str] | None = None) -> Any:
    return pq.read_table(pa.BufferReader(body), columns=list(columns) if columns else None)
