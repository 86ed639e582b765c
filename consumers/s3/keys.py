"""S3 object keys for batches: Hive-style hour partitions and a name fixed by the shard range."""

from __future__ import annotations

from consumers.s3.batching import Batch, as_utc
from consumers.s3.format import FILE_SUFFIX


def partition_path(prefix: str, batch: Batch) -> str:
    """``{prefix}/year=YYYY/month=MM/day=DD/hour=HH`` from the first record's arrival (UTC)."""
    when = as_utc(batch.first_arrival)
    partitions = f"year={when:%Y}/month={when:%m}/day={when:%d}/hour={when:%H}"
    base = prefix.strip("/")
    return f"{base}/{partitions}" if base else partitions


def object_key(prefix: str, batch: Batch, suffix: str = FILE_SUFFIX) -> str:
    """``…/hour=HH/{shard_id}-{first_sequence}-{first_subsequence}.jsonl.gz``.

    The name comes from the batch's first position, so a replayed batch lands on the same key.
    """
    first = batch.first
    name = f"{batch.shard_id}-{first.sequence}-{first.sub_sequence}{suffix}"
    return f"{partition_path(prefix, batch)}/{name}"
