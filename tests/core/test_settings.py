"""Settings: validated once, one clear line naming a bad variable, secrets never printed."""

from __future__ import annotations

import io
import logging

import pytest

from core.errors import ConfigError
from core.logs import JsonFormatter
from core.settings import load_settings


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("0", False), ("YES", True), ("no", False)]
)
def test_testnet_is_a_real_boolean(monkeypatch: pytest.MonkeyPatch, text: str, value: bool) -> None:
    monkeypatch.setenv("TESTNET", text)
    assert load_settings().testnet is value


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TESTNET", "maybe", "invalid setting TESTNET (got 'maybe')"),
        ("KINESIS_SHARD_COUNT", "0", "invalid setting KINESIS_SHARD_COUNT (got '0')"),
        ("MAX_BATCH_SIZE", "lots", "invalid setting MAX_BATCH_SIZE (got 'lots')"),
        ("INITIAL_POSITION", "YESTERDAY", "invalid setting INITIAL_POSITION (got 'YESTERDAY')"),
        ("INITIAL_POSITION", "AT_TIMESTAMP:soon", "invalid setting INITIAL_POSITION"),
        ("S3_SSE", "rot13", "invalid setting S3_SSE (got 'rot13')"),
        ("AGGREGATION_MAX_BYTES", "1047553", "invalid setting AGGREGATION_MAX_BYTES"),
        (
            "GET_RECORDS_MAX_USER_RECORDS",
            "0",
            "invalid setting GET_RECORDS_MAX_USER_RECORDS (got '0')",
        ),
    ],
)
def test_bad_values_stop_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_defaults_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "REGION", "KINESIS_SHARD_COUNT", "MAX_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.aws_region == "ap-southeast-1"
    assert settings.kinesis_stream_name == "crypto-live-miniticker"
    assert (settings.max_batch_size, settings.max_batch_timeout) == (1000, 10)
    assert settings.initial_position == "TRIM_HORIZON"
    monkeypatch.setenv("REGION", "eu-west-1")
    assert load_settings().aws_region == "eu-west-1"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.s3_bucket = "other"  # type: ignore[misc]


def test_a_secret_setting_never_reaches_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "sk-very-secret-value")
    settings = load_settings()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("starting with %s", settings)
        logger.warning("dump %s", settings.model_dump())
    finally:
        logger.removeHandler(handler)
    assert "sk-very-secret-value" not in stream.getvalue()
    assert '"service": "test"' in stream.getvalue()


def test_the_largest_aggregate_size_allowed_is_one_the_aggregator_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from producer.aggregation import ShardAggregator
    from producer.shard_map import ShardMap, ShardRange

    monkeypatch.setenv("AGGREGATION_MAX_BYTES", "1047552")
    limit = load_settings().aggregation_max_bytes
    one_shard = ShardMap([ShardRange("shardId-000000000000", 0, 2**128 - 1)])
    ShardAggregator(one_shard, max_bytes=limit)  # no ValueError at start-up
