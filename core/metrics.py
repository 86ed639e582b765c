"""Metric names, defined once, and the collector every service records into."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Counters(StrEnum):
    """Monotonic counts (Prometheus ``*_total``)."""

    MESSAGES_RECEIVED = "crypto_live_messages_received_total"
    RECORDS_VALID = "crypto_live_records_valid_total"
    RECORDS_REJECTED = "crypto_live_records_rejected_total"
    RECORDS_PUT = "crypto_live_records_put_total"
    KINESIS_RECORDS_PUT = "crypto_live_kinesis_records_put_total"
    KINESIS_BYTES_PUT = "crypto_live_kinesis_bytes_put_total"
    PUT_REQUESTS = "crypto_live_put_requests_total"
    PUT_RETRIES = "crypto_live_put_retries_total"
    PUT_FAILED_ENTRIES = "crypto_live_put_failed_entries_total"
    DEAD_LETTERS = "crypto_live_dead_letters_total"
    RECONNECTS = "crypto_live_source_reconnects_total"
    ROTATIONS = "crypto_live_source_rotations_total"
    OVERLAP_DUPLICATES = "crypto_live_source_overlap_duplicates_total"
    RESHARDS = "crypto_live_shard_map_refreshes_total"
    RECORDS_CONSUMED = "crypto_live_records_consumed_total"
    GET_RECORDS_RETRIES = "crypto_live_get_records_retries_total"
    RECORDS_REPLAYED = "crypto_live_records_replayed_total"
    S3_OBJECTS_WRITTEN = "crypto_live_s3_objects_written_total"
    S3_RECORDS_WRITTEN = "crypto_live_s3_records_written_total"
    S3_BYTES_WRITTEN = "crypto_live_s3_bytes_written_total"
    S3_PUT_RETRIES = "crypto_live_s3_put_retries_total"
    S3_DUPLICATES_DROPPED = "crypto_live_s3_duplicates_dropped_total"
    DYNAMODB_REQUESTS = "crypto_live_dynamodb_requests_total"
    DYNAMODB_ITEMS_WRITTEN = "crypto_live_dynamodb_items_written_total"
    DYNAMODB_UNPROCESSED_RETRIES = "crypto_live_dynamodb_unprocessed_retries_total"
    DYNAMODB_CALL_RETRIES = "crypto_live_dynamodb_call_retries_total"
    LATEST_UPDATES = "crypto_live_latest_updates_total"
    LATEST_STALE_SKIPPED = "crypto_live_latest_stale_skipped_total"
    LATEST_COALESCED = "crypto_live_latest_coalesced_total"
    CANDLES_WRITTEN = "crypto_live_candles_written_total"
    OPEN_KLINES_SKIPPED = "crypto_live_open_klines_skipped_total"


class Gauges(StrEnum):
    """Values that go up and down."""

    QUEUE_DEPTH = "crypto_live_queue_depth"
    BUFFERED_RECORDS = "crypto_live_buffered_records"
    LATEST_WAITING = "crypto_live_latest_waiting"


class Histograms(StrEnum):
    """Distributions (seconds unless the name says otherwise)."""

    PUT_SECONDS = "crypto_live_put_seconds"
    S3_PUT_SECONDS = "crypto_live_s3_put_seconds"
    DYNAMODB_REQUEST_SECONDS = "crypto_live_dynamodb_request_seconds"
    END_TO_END_SECONDS = "crypto_live_end_to_end_seconds"
    HISTORY_DURABLE_SECONDS = "crypto_live_history_durable_seconds"
    LATEST_AGE_SECONDS = "crypto_live_latest_age_seconds"
    BATCH_RECORDS = "crypto_live_batch_records"
    RECONNECT_GAP_SECONDS = "crypto_live_source_reconnect_gap_seconds"


_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 12, 15, 30, 60)
_BUCKETS: dict[str, tuple[float, ...]] = {
    Histograms.END_TO_END_SECONDS: _LATENCY_BUCKETS,
    Histograms.HISTORY_DURABLE_SECONDS: _LATENCY_BUCKETS,
    Histograms.LATEST_AGE_SECONDS: _LATENCY_BUCKETS,
    Histograms.RECONNECT_GAP_SECONDS: (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    Histograms.BATCH_RECORDS: (1, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000),
}
SHARD_LAG = "crypto_live_shard_millis_behind"


_HELP = {
    Counters.MESSAGES_RECEIVED: "Websocket messages received",
    Counters.RECORDS_VALID: "Valid miniTicker records accepted",
    Counters.RECORDS_REJECTED: "Invalid records or messages rejected to dead letters",
    Counters.RECORDS_PUT: "User records confirmed written to Kinesis",
    Counters.KINESIS_RECORDS_PUT: "Kinesis records (aggregates) confirmed written",
    Counters.KINESIS_BYTES_PUT: "Bytes of Kinesis records confirmed written",
    Counters.PUT_REQUESTS: "PutRecords requests sent",
    Counters.PUT_RETRIES: "PutRecords entries or calls retried",
    Counters.PUT_FAILED_ENTRIES: "PutRecords entries that failed and were retried",
    Counters.DEAD_LETTERS: "Dead letters written durably",
    Counters.RECONNECTS: "Websocket reconnects",
    Counters.ROTATIONS: "Planned websocket rotations (new connection opened before the old closed)",
    Counters.OVERLAP_DUPLICATES: "Frames seen on both connections during a rotation, kept once",
    Histograms.RECONNECT_GAP_SECONDS: "From a websocket connection lost to its replacement open",
    Counters.RESHARDS: "Shard map refreshes after a reshard",
    Counters.RECORDS_CONSUMED: "Records read from Kinesis and handed to the sink",
    Counters.GET_RECORDS_RETRIES: "GetRecords calls retried after throttling or an error",
    Counters.RECORDS_REPLAYED: "Records re-driven into a sink by replay",
    Histograms.END_TO_END_SECONDS: "Producer receipt to durable in the sink, per record",
    Histograms.HISTORY_DURABLE_SECONDS: "Producer receipt to durable in the history table",
    Histograms.LATEST_AGE_SECONDS: "Producer receipt to the record's latest-ticker row written",
    Counters.LATEST_COALESCED: "Latest-ticker updates covered by a newer one while waiting",
    Gauges.LATEST_WAITING: "Latest-ticker updates waiting to be written",
    Histograms.BATCH_RECORDS: "Records per batch handed to a sink",
    Counters.S3_OBJECTS_WRITTEN: "S3 batch objects confirmed written",
    Counters.S3_RECORDS_WRITTEN: "Rows in S3 batch objects confirmed written",
    Counters.S3_BYTES_WRITTEN: "Gzipped bytes of S3 batch objects confirmed written",
    Counters.S3_PUT_RETRIES: "S3 PutObject calls retried after a transient error",
    Counters.S3_DUPLICATES_DROPPED: "Duplicate records (producer retries) dropped in a batch",
    Counters.DYNAMODB_REQUESTS: "DynamoDB BatchWriteItem and PutItem requests sent",
    Counters.DYNAMODB_ITEMS_WRITTEN: "History items confirmed written to DynamoDB",
    Counters.DYNAMODB_UNPROCESSED_RETRIES: "History items returned as UnprocessedItems and retried",
    Counters.DYNAMODB_CALL_RETRIES: "DynamoDB calls retried after throttling or a server error",
    Counters.LATEST_UPDATES: "Latest-ticker rows moved forward",
    Counters.LATEST_STALE_SKIPPED: "Latest-ticker updates skipped: stored row as new or newer",
    Counters.CANDLES_WRITTEN: "Closed-kline items confirmed written to the candles table",
    Counters.OPEN_KLINES_SKIPPED: "Open klines (minute not over) a sink skipped, by design",
    Gauges.QUEUE_DEPTH: "Messages waiting between reader and encoder",
    Gauges.BUFFERED_RECORDS: "User records buffered in aggregates or waiting to be put",
    Histograms.PUT_SECONDS: "PutRecords call latency",
    Histograms.S3_PUT_SECONDS: "S3 PutObject call latency",
    Histograms.DYNAMODB_REQUEST_SECONDS: "DynamoDB BatchWriteItem and PutItem call latency",
}


class Metrics:
    """A private Prometheus registry per service instance, readable in-process by tests."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(name.removesuffix("_total"), _HELP[name], registry=self.registry)
            for name in Counters
        }
        self._gauges = {name: Gauge(name, _HELP[name], registry=self.registry) for name in Gauges}
        self._histograms = {
            name: Histogram(
                name,
                _HELP[name],
                registry=self.registry,
                buckets=_BUCKETS.get(name, Histogram.DEFAULT_BUCKETS),
            )
            for name in Histograms
        }
        self._shard_lag = Gauge(
            SHARD_LAG,
            "MillisBehindLatest of the last read, per owned shard",
            ["shard_id"],
            registry=self.registry,
        )

    def inc(self, name: Counters, amount: float = 1) -> None:
        self._counters[name].inc(amount)

    def set(self, name: Gauges, value: float) -> None:
        self._gauges[name].set(value)

    def observe(self, name: Histograms, value: float) -> None:
        self._histograms[name].observe(value)

    def observe_ages(self, name: Histograms, received_at_us: Iterable[int]) -> None:
        """Observe, per record, the seconds from its producer ``received_at`` (epoch µs) to now."""
        now_us = time.time_ns() // 1000
        self.observe_many(name, [(now_us - received_at) / 1e6 for received_at in received_at_us])

    def observe_many(self, name: Histograms, values: Iterable[float]) -> None:
        """``observe`` each value; the histogram's sum and buckets move once per call, not once
        per value (a consumer observes every record it makes durable)."""
        histogram = self._histograms[name]
        amounts = list(values)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        bounds = getattr(histogram, "_upper_bounds", None)
        if buckets is None or total is None or bounds is None or any(map(math.isnan, amounts)):
            for amount in amounts:  # not prometheus_client's layout, or a NaN: one at a time
                histogram.observe(amount)
            return
        if not amounts:
            return
        # As Histogram.observe: the sum, and a count in the first bucket whose upper bound is
        # >= the value (the last bound is +Inf), which is where bisect_left lands.
        total.inc(sum(amounts))
        for index, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
            buckets[index].inc(count)

    def set_shard_lag(self, shard_id: str, millis: int | None) -> None:
        """Lag of one shard; None when this worker no longer reads it."""
        if millis is not None:
            self._shard_lag.labels(shard_id=shard_id).set(millis)
        elif self.shard_lag(shard_id) is not None:
            self._shard_lag.remove(shard_id)

    def shard_lag(self, shard_id: str) -> float | None:
        return self.registry.get_sample_value(SHARD_LAG, {"shard_id": shard_id})

    def shard_lags(self) -> dict[str, float]:
        """Lag of every shard this service reads, by shard id."""
        return {
            sample.labels["shard_id"]: sample.value
            for family in self.registry.collect()
            if family.name == SHARD_LAG
            for sample in family.samples
        }

    def histogram_count(self, name: Histograms) -> float:
        """How many observations a histogram has (for tests and summaries)."""
        return self.registry.get_sample_value(f"{name}_count") or 0.0

    def value(self, name: Counters | Gauges) -> float:
        """Current value of a counter or gauge (for tests, progress and summaries): collected
        from that metric alone, not the whole registry (waiters poll it)."""
        metric = self._counters.get(name) if isinstance(name, Counters) else self._gauges[name]
        for family in metric.collect() if metric is not None else ():
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return 0.0

    def snapshot(self) -> dict[str, float]:
        """Every counter and gauge by name."""
        return {str(name): self.value(name) for name in (*Counters, *Gauges)}
