"""The S3 sink: Firehose-like gzipped JSONL batches, exactly-once under replay.

Pure core: ``batching`` (BatchCutter), ``format`` (JsonlGzipFormat), ``keys`` (object_key).
I/O: ``writer`` (S3BatchWriter, MemoryBatchWriter). Engine glue: ``processor`` (S3Processor).
"""
