"""REST rows as Kline records, and the weight pacer's decisions: pure."""

from __future__ import annotations

from typing import Any

import pytest

from crypto_live.backfill import BackfillError
from crypto_live.backfill.pacing import WeightPacer, used_weight
from crypto_live.backfill.rows import kline_record
from schemas.codec import KLINE_SCHEMA, default_codec

T0 = 1_795_000_020_000
ROW: list[Any] = [
    T0, "91234.56000000", "91300.00000000", "91200.01000000", "91250.10000000",
    "12.34567000", T0 + 59_999, "1126543.21000000", 321, "6.00000001", "547000.00000000", "0",
]  # fmt: skip


def test_a_row_becomes_a_closed_backfill_kline_that_encodes() -> None:
    record = kline_record("ETHUSDT", ROW, 7)
    assert (record["open_price"], record["high_price"], record["low_price"]) == tuple(ROW[1:4])
    assert (record["close_price"], record["base_volume"], record["quote_volume"]) == (
        ROW[4], ROW[5], ROW[7],
    )  # fmt: skip
    assert (record["taker_buy_base_volume"], record["taker_buy_quote_volume"]) == (ROW[9], ROW[10])
    assert (
        record["event_time"] == T0 + 60_000
        and record["iso_timestamp"] == "2026-11-18T11:08:00.000Z"
    )
    assert record["stream_type"] == "ethusdt@kline_1m" and record["received_at"] == 7
    codec = default_codec().for_writer(KLINE_SCHEMA)
    assert codec.decode_typed(codec.encode(record)) == (KLINE_SCHEMA, record)
    assert kline_record("ETHUSDT", ROW[:11], 7) == record  # the "ignore" column is not needed


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (ROW[:10], "malformed kline row"),
        ("not a row", "malformed kline row"),
        ([str(T0), *ROW[1:]], "non-integer times"),
        ([T0 + 1, *ROW[1:6], T0 + 60_000, *ROW[7:]], "not one whole minute"),
        ([*ROW[:6], T0 + 119_999, *ROW[7:]], "not one whole minute"),
        ([T0, 91234.5, *ROW[2:]], "open_price is not a decimal string"),
        ([*ROW[:5], "-1", *ROW[6:]], "base_volume is not a decimal string"),
        ([*ROW[:9], "1e5", *ROW[10:]], "taker_buy_base_volume is not a decimal string"),
        ([*ROW[:7], "5\n", *ROW[8:]], "quote_volume is not a decimal string"),
    ],
)
def test_a_malformed_row_is_one_line(row: Any, fragment: str) -> None:
    with pytest.raises(BackfillError, match=fragment) as caught:
        kline_record("BTCUSDT", row, 0)
    assert "\n" not in str(caught.value)


MINUTE = 1_795_000_020_000


def test_pacer_goes_until_the_next_request_would_pass_the_budget() -> None:
    pacer = WeightPacer(max_weight=10, request_weight=2)
    assert pacer.wait_ms(MINUTE + 5_000) == 0  # nothing known yet
    pacer.observe(8, MINUTE + 5_000)
    assert pacer.wait_ms(MINUTE + 6_000) == 0  # 8 + 2 <= 10
    pacer.observe(9, MINUTE + 6_000)
    assert pacer.wait_ms(MINUTE + 20_000) == 41_000  # to the next minute, plus 1 s of margin
    assert pacer.wait_ms(MINUTE + 60_000) == 0  # a new minute: Binance counts from 0 again
    pacer.observe(None, MINUTE + 60_500)  # an answer without the header changes nothing
    assert pacer.wait_ms(MINUTE + 59_000) == 2_000  # still the minute of the 9


def test_pacer_rejects_a_budget_below_one_request() -> None:
    with pytest.raises(ValueError, match="below one request"):
        WeightPacer(max_weight=1, request_weight=2)


def test_used_weight_header() -> None:
    assert used_weight({"X-MBX-USED-WEIGHT-1M": "42"}) == 42
    assert used_weight({"x-mbx-used-weight-1m": "7"}) == 7
    assert used_weight({"X-MBX-USED-WEIGHT-1M": "lots"}) is None
    assert used_weight({}) is None and used_weight(None) is None
