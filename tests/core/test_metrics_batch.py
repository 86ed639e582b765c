"""Metrics.observe_many: the same histogram as one observe per value, in one update."""

from __future__ import annotations

import math
import random

import pytest

from core.metrics import Histograms, Metrics

EDGES = [0.0, 0.05, 0.1, 1.0, 1.5, 60.0, 10_000.0, 50_000.0, -1.0, 1e300, math.inf]


def samples(metrics: Metrics, name: Histograms) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.registry.collect()
        if family.name == name
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize("name", list(Histograms))
def test_observe_many_equals_one_observe_per_value(name: Histograms) -> None:
    rng = random.Random(7)
    values = [
        *EDGES,
        *(rng.uniform(-1, 70) for _ in range(500)),
        *(rng.choice(EDGES) for _ in range(50)),
    ]
    one_by_one, batched = Metrics("a"), Metrics("b")
    for value in values:
        one_by_one.observe(name, value)
    batched.observe_many(name, iter(values[:300]))
    batched.observe_many(name, values[300:])
    expected, got = samples(one_by_one, name), samples(batched, name)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert batched.histogram_count(name) == len(values)


def test_nothing_and_nan_are_observed_as_observe_would() -> None:
    one_by_one, batched = Metrics("a"), Metrics("b")
    batched.observe_many(Histograms.END_TO_END_SECONDS, [])
    assert batched.histogram_count(Histograms.END_TO_END_SECONDS) == 0
    for value in (0.2, math.nan):
        one_by_one.observe(Histograms.END_TO_END_SECONDS, value)
    batched.observe_many(Histograms.END_TO_END_SECONDS, [0.2, math.nan])
    expected = samples(one_by_one, Histograms.END_TO_END_SECONDS)
    got = samples(batched, Histograms.END_TO_END_SECONDS)
    assert {k: v for k, v in expected.items() if not math.isnan(v)} == {
        k: v for k, v in got.items() if not math.isnan(v)
    }
    assert batched.histogram_count(Histograms.END_TO_END_SECONDS) == 1  # NaN is in no bucket


def test_observe_ages_counts_every_record() -> None:
    metrics = Metrics("a")
    metrics.observe_ages(Histograms.END_TO_END_SECONDS, range(1000))
    assert metrics.histogram_count(Histograms.END_TO_END_SECONDS) == 1000
