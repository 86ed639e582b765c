"""Metric names, defined once, and the collector every service records into."""

from __future__ import annotations

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
    RESHARDS = "crypto_live_shard_map_refreshes_total"


class Gauges(StrEnum):
    """Values that go up and down."""

    QUEUE_DEPTH = "crypto_live_queue_depth"
    BUFFERED_RECORDS = "crypto_live_buffered_records"


class Histograms(StrEnum):
    """Distributions in seconds."""

    PUT_SECONDS = "crypto_live_put_seconds"


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
    Counters.RESHARDS: "Shard map refreshes after a reshard",
    Gauges.QUEUE_DEPTH: "Messages waiting between reader and encoder",
    Gauges.BUFFERED_RECORDS: "User records buffered in aggregates or waiting to be put",
    Histograms.PUT_SECONDS: "PutRecords call latency",
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
            name: Histogram(name, _HELP[name], registry=self.registry) for name in Histograms
        }

    def inc(self, name: Counters, amount: float = 1) -> None:
        self._counters[name].inc(amount)

    def set(self, name: Gauges, value: float) -> None:
        self._gauges[name].set(value)

    def observe(self, name: Histograms, value: float) -> None:
        self._histograms[name].observe(value)

    def value(self, name: Counters | Gauges) -> float:
        """Current value of a counter or gauge (for tests, progress and summaries)."""
        sample = self.registry.get_sample_value(name)
        return 0.0 if sample is None else sample

    def snapshot(self) -> dict[str, float]:
        """Every counter and gauge by name."""
        return {str(name): self.value(name) for name in (*Counters, *Gauges)}
