"""The log formatters: JSON lines for services, one human line for a terminal."""

from __future__ import annotations

import json
import logging
import sys

from core.logs import JsonFormatter, LineFormatter


def _record(message: str, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("producer.websocket", level, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_line_formatter_writes_one_line_with_context_and_the_error() -> None:
    try:
        raise ValueError("bad\nframe")
    except ValueError:
        record = _record("closed\n  mid-stream", shard_id="shardId-000", exc_info=sys.exc_info())
    line = LineFormatter().format(record)
    assert "\n" not in line
    assert line.endswith(
        "WARNING producer.websocket: closed mid-stream (shard_id=shardId-000)"
        ": ValueError: bad frame"
    )


def test_json_formatter_keeps_the_traceback() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = _record("closed", exc_info=sys.exc_info())
    line = json.loads(JsonFormatter("up").format(record))
    assert line["service"] == "up" and line["level"] == "WARNING"
    assert "Traceback" in line["exception"]
