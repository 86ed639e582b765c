"""JSON-lines logging: one formatter, configured once by the process entry point."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

# Keys a log call may attach with ``extra={...}``; everything else stays out of the line.
CONTEXT_KEYS: Final = ("shard_id", "sequence_number", "stream", "count", "endpoint", "reason")


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object with time, level, service, logger and message."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr; only process entry points call this."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries: their INFO is noise in a service log.
    for name in ("botocore", "boto3", "urllib3", "werkzeug", "websockets", "binance"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
