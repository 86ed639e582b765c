"""The base layer every package imports: errors, settings, AWS clients and error
classification, backoff, threads, metrics, logs, health and dead letters."""
