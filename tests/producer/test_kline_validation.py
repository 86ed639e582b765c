"""Kline messages through validate_message: records with kline.avsc's fields, every reject
reason, and the miniTicker path left as it was."""

from __future__ import annotations

from typing import Any

import pytest

from producer.kline_validation import kline_stream
from producer.validation import Rejected, validate_message
from schemas.codec import KLINE_SCHEMA, default_codec
from schemas.kline import FIELD_ORDER
from tests.producer.klines import (
    EVENT_TIME,
    OPEN_TIME,
    RECEIVED_AT,
    expected_kline,
    kline_message,
    kline_payload,
)
from tests.producer.test_validation import EXPECTED_BTC, envelope, payload


def reject_reason(message: object) -> str:
    records, rejects = validate_message(message, RECEIVED_AT)
    assert records == []
    assert len(rejects) == 1
    assert isinstance(rejects[0], Rejected)
    return rejects[0].reason


def test_a_closed_kline_becomes_one_kline_record() -> None:
    data = kline_payload()
    records, rejects = validate_message(kline_message(data), RECEIVED_AT)
    assert rejects == []
    assert records == [expected_kline(data)]
    (record,) = records
    assert tuple(record) == FIELD_ORDER  # kline.avsc's fields, in its order
    assert record["iso_timestamp"] == "2026-11-18T11:08:00.001Z"
    assert record["source"] == "websocket" and record["closed"] is True


def test_an_open_kline_is_a_record_too() -> None:
    data = kline_payload(x=False, n=3, L=102, T=OPEN_TIME + 59_999)
    (record,), _ = validate_message(kline_message(data), RECEIVED_AT)
    assert record == expected_kline(data)
    assert record["closed"] is False and record["trades"] == 3


def test_the_record_encodes_with_the_kline_schema() -> None:
    (record,), _ = validate_message(kline_message(kline_payload()), RECEIVED_AT)
    codec = default_codec()
    data = codec.for_writer(KLINE_SCHEMA).encode(record)
    assert codec.decode_typed(data) == (KLINE_SCHEMA, record)


def test_stream_name_is_normalised_and_no_trade_ids_are_accepted() -> None:
    data = kline_payload(f=-1, L=-1, n=0, v="0", q="0", V="0", Q="0")
    (record,), _ = validate_message(kline_message(data, "BTCUSDT@kline_1m"), RECEIVED_AT)
    assert record["stream_type"] == "btcusdt@kline_1m"
    assert (record["first_trade_id"], record["last_trade_id"], record["trades"]) == (-1, -1, 0)


def test_kline_stream_names() -> None:
    assert kline_stream("ethusdt@kline_1m") == ("ETHUSDT", "ethusdt@kline_1m")
    for other in ("ethusdt@kline_5m", "ethusdt@miniTicker", "@kline_1m", "eth-usdt@kline_1m"):
        assert kline_stream(other) is None


def without(key: str) -> dict[str, Any]:
    data = kline_payload()
    del data[key]
    return data


def without_k(key: str) -> dict[str, Any]:
    data = kline_payload()
    del data["k"][key]
    return data


BAD_KLINES: list[tuple[dict[str, Any], str]] = [
    (without("e"), "missing field 'e'"),
    (without("E"), "missing field 'E'"),
    (without("s"), "missing field 's'"),
    (without("k"), "missing field 'k'"),
    (dict(kline_payload(), e="24hrMiniTicker"), "unknown event type '24hrMiniTicker'"),
    (dict(kline_payload(), E="soon"), "field 'E' is not an integer: string"),
    (dict(kline_payload(), E=True), "field 'E' is not an integer: boolean"),
    (dict(kline_payload(), E=1_000), "field 'E' out of range (years 2017..2100): 1000"),
    (dict(kline_payload(), s=5), "field 's' is not a string: number"),
    (dict(kline_payload(), s="btcusdt"), "field 's' is not an upper-case symbol: 'btcusdt'"),
    (dict(kline_payload(), s="ETHUSDT"), "symbol 'ETHUSDT' does not match stream symbol"),
    (dict(kline_payload(), k=[1, 2]), "field 'k' is not an object: array"),
    *((without_k(key), f"missing field 'k.{key}'") for key in "tTsifLochlvnxqVQ"),
    (kline_payload(t="1"), "field 'k.t' is not an integer: string"),
    (kline_payload(T=1.5), "field 'k.T' is not an integer: number"),
    (kline_payload(f=None), "field 'k.f' is not an integer: null"),
    (kline_payload(L="141"), "field 'k.L' is not an integer: string"),
    (kline_payload(n=True), "field 'k.n' is not an integer: boolean"),
    (kline_payload(t=60_000, T=119_999), "field 'k.t' out of range (years 2017..2100): 60000"),
    (kline_payload(t=OPEN_TIME + 1, T=OPEN_TIME + 60_000), "field 'k.t' is not a whole minute"),
    (kline_payload(T=OPEN_TIME + 60_000), "field 'k.T' is not k.t + 59999"),
    (kline_payload(s="ETHUSDT"), "field 'k.s' 'ETHUSDT' does not match 's' 'BTCUSDT'"),
    (kline_payload(i="5m"), "unsupported interval '5m' (only 1m)"),
    (kline_payload(f=-2), "field 'k.f' is not a trade id (-1 or more): -2"),
    (kline_payload(L=2**63), "field 'k.L' is not a trade id (-1 or more)"),
    (kline_payload(n=-1), "field 'k.n' is not a number of trades: -1"),
    (kline_payload(x="true"), "field 'k.x' is not a boolean: string"),
    (kline_payload(x=1), "field 'k.x' is not a boolean: number"),
    (kline_payload(o=91000.01), "field 'k.o' must be a decimal string, got number"),
    (kline_payload(c="-1.0"), "field 'k.c' is not a plain decimal: '-1.0'"),
    (kline_payload(h="1e5"), "field 'k.h' is not a plain decimal: '1e5'"),
    (kline_payload(l=""), "field 'k.l' is not a plain decimal: ''"),
    (kline_payload(v="9" * 40), "field 'k.v' is not a plain decimal"),
    (kline_payload(q="1." + "1" * 19), "field 'k.q' is not a plain decimal"),
    (kline_payload(V=None), "field 'k.V' must be a decimal string, got null"),
    (kline_payload(Q="٣"), "field 'k.Q' is not a plain decimal: '٣'"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_KLINES)
def test_each_malformed_kline_is_rejected_with_its_reason(
    data: dict[str, Any], reason: str
) -> None:
    assert reason in reject_reason(kline_message(data, "btcusdt@kline_1m"))


def test_a_reject_keeps_the_message_and_the_first_rule_broken_is_named() -> None:
    data = kline_payload(i="5m", c="bad")  # two faults: the interval comes first
    message = kline_message(data)
    _, (reject,) = validate_message(message, RECEIVED_AT)
    assert reject.reason == "unsupported interval '5m' (only 1m)"
    assert b'"stream":"btcusdt@kline_1m"' in reject.raw and b'"i":"5m"' in reject.raw


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "field 'data' is not an object: null"),
        ([kline_payload()], "field 'data' is not an object: array"),
        ("kline", "field 'data' is not an object: string"),
    ],
)
def test_a_kline_stream_whose_data_is_not_an_object_is_rejected(data: object, reason: str) -> None:
    assert reject_reason(kline_message(data, "btcusdt@kline_1m")) == reason


def test_other_kline_intervals_are_unsupported_streams() -> None:
    data = kline_payload(i="5m")
    assert reject_reason(kline_message(data, "btcusdt@kline_5m")) == (
        "unsupported stream 'btcusdt@kline_5m'"
    )


def test_a_miniticker_payload_on_a_kline_stream_is_rejected_and_vice_versa() -> None:
    assert reject_reason(envelope(payload(), "btcusdt@kline_1m")) == "missing field 'k'"
    assert reject_reason(kline_message(kline_payload(), "btcusdt@miniTicker")) == (
        "missing field 'c'"
    )


def test_klines_and_tickers_interleaved_each_take_their_own_path() -> None:
    tick = envelope(payload())
    kline = kline_message(kline_payload())
    for _ in range(3):  # cached stream names, both ways round
        assert validate_message(tick, EXPECTED_BTC["received_at"]) == ([EXPECTED_BTC], [])
        assert validate_message(kline, RECEIVED_AT) == ([expected_kline(kline["data"])], [])


def test_a_dict_subclass_message_on_the_slow_path_still_validates() -> None:
    class Data(dict[str, Any]):
        pass

    data = Data(kline_payload())
    (record,), _ = validate_message(kline_message(data), RECEIVED_AT)
    assert record["event_time"] == EVENT_TIME


def test_a_known_miniticker_stream_never_reaches_the_kline_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from producer import validation

    tick = envelope(payload())
    validate_message(tick, 1)  # the stream name is cached from here on

    def boom(stream: str) -> None:
        raise AssertionError(f"kline lookup for {stream}")

    monkeypatch.setattr(validation, "kline_stream", boom)
    (record,), _ = validate_message(tick, EXPECTED_BTC["received_at"])
    assert record == EXPECTED_BTC
