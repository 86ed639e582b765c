"""Websocket frames to parsed JSON: orjson first, the stdlib for what orjson refuses."""

from __future__ import annotations

import math

import pytest

from producer.source import WireMessage, tolerant_json_loads
from producer.validation import UnparsedMessage, validate_message


@pytest.mark.parametrize("frame", ['{"a":1,"b":"x"}', b'{"a":1,"b":"x"}'])
def test_a_frame_keeps_its_exact_text_and_parses(frame: str | bytes) -> None:
    parsed = tolerant_json_loads(frame)
    assert parsed == WireMessage(frame, {"a": 1, "b": "x"})


def test_json_beyond_a_double_is_still_json_and_rejected_by_the_rules() -> None:
    frame = '{"stream":"btcusdt@miniTicker","data":{"e":"24hrMiniTicker","c":1e999}}'
    parsed = tolerant_json_loads(frame)  # orjson refuses 1e999; the stdlib reads inf
    assert isinstance(parsed, WireMessage)
    assert math.isinf(parsed.parsed["data"]["c"])
    records, rejects = validate_message(parsed.parsed, 0)
    assert records == []
    assert [r.reason for r in rejects] == ["missing field 'E'"]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ('{"stream":"btcusdt@miniTicker","data":{"E":1', "Expecting"),
        ("[" * 100_000, "recursion"),
        (b"\xff\xfe{}", "Expecting value"),
    ],
)
def test_a_frame_that_is_not_json_is_unparsed_with_the_error(
    frame: str | bytes, error: str
) -> None:
    parsed = tolerant_json_loads(frame)
    assert isinstance(parsed, UnparsedMessage)
    assert parsed.raw == frame
    assert error.lower() in parsed.error.lower()
