"""Logging: JSON lines from one formatter, configured once by the process entry point; one-line
human messages for a terminal that shows something else too (``crypto-live up``'s table)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
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


class LineFormatter(logging.Formatter):
    """One line for a person: ``12:03:04 WARNING producer.websocket: message (shard_id=...)``;
    an exception adds its type and message, never its traceback (that stays in the JSON log)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")  # the viewer's clock
        text = " ".join(record.getMessage().split())
        context = [
            f"{key}={record.__dict__[key]}"
            for key in CONTEXT_KEYS
            if record.__dict__.get(key) is not None
        ]
        if context:
            text += f" ({', '.join(context)})"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f": {type(error).__name__}: {' '.join(str(error).split())}"
        return f"{when} {record.levelname} {record.name}: {text}"


def configure_logging(
    service: str,
    level: str = "INFO",
    *,
    path: Path | None = None,
    also: Sequence[logging.Handler] = (),
) -> None:
    """Send JSON lines to stderr, or append them to the file at ``path``; ``also``: more handlers
    (each with its own level and formatter). Only process entry points call this."""
    handler: logging.Handler
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler, *also]
    root.setLevel(level)
    # Chatty libraries: their INFO is noise in a service log.
    for name in ("botocore", "boto3", "urllib3", "werkzeug", "websockets", "binance"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
