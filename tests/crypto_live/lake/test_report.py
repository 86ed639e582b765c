"""The daily report fold and its CSV, against values worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from crypto_live.lake.candles import Candle
from crypto_live.lake.report import DayFold, change_pct, plain, to_csv

DAY = date(2026, 11, 23)
MIDNIGHT = 1_795_392_000_000  # 2026-11-23T00:00:00Z


def candle(minute: int, o: str, c: str, h: str, low: str, base: str, quote: str, n: int) -> Candle:
    start = MIDNIGHT + minute * 60_000
    return Candle("ETHUSDT", D(o), D(c), D(h), D(low), D(base), D(quote), n, start, start + 59_999)


def test_day_fold_by_hand() -> None:
    fold = DayFold(DAY, "ETHUSDT")
    fold.add([candle(0, "3500", "3510", "3512", "3499", "1.5", "5250", 3)])
    fold.add([candle(61, "3510", "3480.5", "3515", "3470", "2", "6990", 2)])
    fold.add([candle(1439, "3481", "3490", "3525.25", "3481", "0.25", "872.5", 1)])
    fold.add_updates(4)  # the updates are counted apart from the candles (candle rows lack them)
    fold.add_updates(2)
    row = fold.row(previous_close=D("3400"))
    assert row is not None
    assert (row.open_price, row.close_price) == (D("3500"), D("3490"))
    assert (row.min_price, row.max_price) == (D("3470"), D("3525.25"))
    assert (row.base_volume, row.quote_volume, row.updates) == (D("3.75"), D("13112.5"), 6)
    # (3490 - 3400) / 3400 * 100 = 2.64705882... -> 2.6471
    assert row.change_pct == D("2.6471")


def test_change_pct_rounding_and_missing_previous() -> None:
    assert change_pct(D("104"), D("100")) == D("4.0000")
    assert change_pct(D("99.5"), D("104")) == D("-4.3269")  # -4.326923...
    assert change_pct(D("1.00005"), D("1")) == D("0.0050")
    assert change_pct(D("1"), None) is None
    assert change_pct(D("1"), D("0")) is None


def test_no_candles_no_row() -> None:
    assert DayFold(DAY, "ETHUSDT").row(D("1")) is None


def test_candles_must_ascend() -> None:
    fold = DayFold(DAY, "ETHUSDT")
    fold.add([candle(5, "1", "1", "1", "1", "0", "0", 1)])
    with pytest.raises(ValueError, match="ascend"):
        fold.add([candle(5, "1", "1", "1", "1", "0", "0", 1)])


def test_csv_is_exact_fixed_point_text() -> None:
    fold = DayFold(DAY, "ETHUSDT")
    fold.add([candle(0, "0.00002400", "0.00002410", "0.00002420", "0.00000001", "0", "0E-8", 2)])
    fold.add_updates(2)
    row = fold.row(previous_close=None)
    assert row is not None
    assert to_csv([row]).decode() == (
        "date,symbol,open_price,close_price,min_price,max_price,base_volume,quote_volume,"
        "updates,previous_close,change_pct\n"
        "2026-11-23,ETHUSDT,0.00002400,0.00002410,0.00000001,0.00002420,0.00000000,0.00000000,"
        "2,,\n"
    )
    assert plain(D("1E-8")) == "0.00000001"
    assert plain(D("2.5"), D("0.0001")) == "2.5000"
