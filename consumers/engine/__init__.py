"""The shard engine: leases, balancing, retrieval, decoding, the shard consumer loop and
the scheduler (worker). Sinks plug in through ``RecordProcessor``."""
