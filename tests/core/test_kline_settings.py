"""The candles table and kline prefix settings: defaults, and a bad prefix in one line."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DYNAMO_CANDLES_TABLE_NAME", "S3_KLINES_DIR_PATH", "S3_JSONL_DIR_PATH"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.dynamo_candles_table_name == "crypto-live-candles"
    assert settings.s3_klines_dir_path == "klines_jsonl"
    monkeypatch.setenv("S3_KLINES_DIR_PATH", "lake/klines")
    assert load_settings().s3_klines_dir_path == "lake/klines"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S3_KLINES_DIR_PATH": "batch_jsonl/"}, "invalid setting S3_KLINES_DIR_PATH"),
        ({"S3_KLINES_DIR_PATH": "raw", "S3_JSONL_DIR_PATH": "raw"}, "invalid setting S3_KLINES"),
        ({"S3_KLINES_DIR_PATH": "/"}, "invalid setting S3_KLINES_DIR_PATH (got '/')"),
        ({"DYNAMO_CANDLES_TABLE_NAME": "c"}, "invalid setting DYNAMO_CANDLES_TABLE_NAME"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.delenv("S3_JSONL_DIR_PATH", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
