"""Behaviour of producer.retry: full-jitter backoff and PutRecords result splitting."""

from __future__ import annotations

import random

import pytest

from core.backoff import Backoff
from core.errors import CryptoLiveError
from producer.aggregation import PutEntry
from producer.retry import (
    RETRIABLE_ERROR_CODES,
    PutResultMismatchError,
    is_retriable_error_code,
    split_put_result,
)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.05), (1, 0.1), (2, 0.2), (5, 1.6), (6, 3.2), (7, 5.0), (30, 5.0), (10_000, 5.0)],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    backoff = Backoff()
    assert backoff.delay(attempt, rand=lambda: 0.0) == 0.0
    assert backoff.delay(attempt, rand=lambda: 1.0) == pytest.approx(ceiling)
    assert backoff.delay(attempt, rand=lambda: 0.5) == pytest.approx(ceiling / 2)


def test_backoff_with_real_randomness_stays_within_bounds() -> None:
    backoff = Backoff(base=0.1, cap=2.0)
    rng = random.Random(3)
    for attempt in range(12):
        delays = [backoff.delay(attempt, rand=rng.random) for _ in range(500)]
        ceiling = min(2.0, 0.1 * 2**attempt)
        assert all(0.0 <= d < ceiling for d in delays)
        assert max(delays) > ceiling * 0.9  # jitter spreads over the whole range
        assert min(delays) < ceiling * 0.1


def test_backoff_default_uses_random_random() -> None:
    assert 0.0 <= Backoff().delay(3) < 0.4


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (0.1, -1.0)])
def test_backoff_rejects_bad_parameters(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(base=base, cap=cap)


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt must be >= 0"):
        Backoff().delay(-1)


@pytest.mark.parametrize("code", sorted(RETRIABLE_ERROR_CODES))
def test_throttling_and_internal_errors_are_retriable(code: str) -> None:
    assert is_retriable_error_code(code) is True


@pytest.mark.parametrize(
    "code",
    [
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
        "AccessDeniedException",
        "ValidationException",
        "",
    ],
)
def test_access_and_validation_errors_are_not_retriable(code: str) -> None:
    assert is_retriable_error_code(code) is False


def entries(count: int) -> list[PutEntry]:
    return [PutEntry(f"shardId-{i % 2}", f"key{i}", bytes([i]), None, 1) for i in range(count)]


def test_split_put_result_with_mixed_success_and_failure() -> None:
    sent = entries(4)
    response = {
        "FailedRecordCount": 2,
        "Records": [
            {"SequenceNumber": "495001", "ShardId": "shardId-0"},
            {
                "ErrorCode": "ProvisionedThroughputExceededException",
                "ErrorMessage": "Rate exceeded for shard shardId-1",
            },
            {"SequenceNumber": "495002", "ShardId": "shardId-7"},
            {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
        ],
    }
    failed, succeeded = split_put_result(sent, response)
    assert failed == [sent[1], sent[3]]
    assert succeeded == [(sent[0], "shardId-0", "495001"), (sent[2], "shardId-7", "495002")]


def test_split_put_result_all_succeeded_and_all_failed() -> None:
    sent = entries(2)
    ok = {
        "Records": [
            {"SequenceNumber": "1", "ShardId": "a"},
            {"SequenceNumber": "2", "ShardId": "b"},
        ]
    }
    assert split_put_result(sent, ok) == ([], [(sent[0], "a", "1"), (sent[1], "b", "2")])
    error = {"ErrorCode": "InternalFailure", "ErrorMessage": "x"}
    assert split_put_result(sent, {"Records": [error, error]}) == (sent, [])


def test_result_without_sequence_number_is_retried() -> None:
    sent = entries(1)
    assert split_put_result(sent, {"Records": [{}]}) == (sent, [])


def test_missing_shard_id_falls_back_to_the_entry_shard() -> None:
    sent = entries(1)
    assert split_put_result(sent, {"Records": [{"SequenceNumber": "9"}]}) == (
        [],
        [(sent[0], "shardId-0", "9")],
    )


@pytest.mark.parametrize(
    ("response", "got"),
    [({"Records": [{}]}, "1"), ({"Records": [{}] * 3}, "3"), ({}, "NoneType")],
)
def test_split_put_result_raises_on_length_mismatch(response: dict[str, object], got: str) -> None:
    with pytest.raises(PutResultMismatchError, match=f"sent 2 records, response has {got} results"):
        split_put_result(entries(2), response)
    assert issubclass(PutResultMismatchError, CryptoLiveError)


def test_empty_request_and_response() -> None:
    assert split_put_result([], {"Records": []}) == ([], [])
