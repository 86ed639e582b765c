"""moto's standalone server, with Kinesis resharding made to behave as on AWS.

moto 5.2.5 routes a record to the first shard whose hash range holds its key, open or
closed, so after SplitShard every record still lands in the closed parent; and its
SplitShard re-puts the parent's records (into that same parent), its MergeShards copies both
parents' records into the child. On AWS a closed shard takes no records and keeps the ones it
had, and a child starts empty. These three functions are replaced; the rest of moto runs as
shipped. Run as ``python -m tests.support.moto_server -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from moto.kinesis import models
from moto.kinesis.exceptions import InvalidArgumentError
from moto.server import main

_split_shard = models.Stream.split_shard
_merge_shards = models.Stream.merge_shards


def get_open_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
    if not isinstance(partition_key, str) or len(partition_key) > 256:
        raise InvalidArgumentError("partition_key")
    if explicit_hash_key:
        key = int(explicit_hash_key)
        if key >= 2**128:
            raise InvalidArgumentError("explicit_hash_key")
    else:
        key = int(hashlib.md5(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
            return shard
    return None


def split_shard_keeping_records(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
    parent = self.shards[shard_to_split]
    kept = OrderedDict(parent.records)
    before = set(self.shards)
    _split_shard(self, shard_to_split, new_starting_hash_key)
    parent.records = kept
    for shard_id in set(self.shards) - before:
        self.shards[shard_id].records.clear()  # drop moto's re-put copies


def merge_shards_keeping_records(
    self: Any, shard_to_merge: str, adjacent_shard_to_merge: str
) -> None:
    before = set(self.shards)
    _merge_shards(self, shard_to_merge, adjacent_shard_to_merge)
    for shard_id in set(self.shards) - before:
        self.shards[shard_id].records.clear()  # drop moto's copies of the parents' records


models.Stream.get_shard_for_key = get_open_shard_for_key
models.Stream.split_shard = split_shard_keeping_records
models.Stream.merge_shards = merge_shards_keeping_records

if __name__ == "__main__":
    main()
