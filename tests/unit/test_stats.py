"""Unit and property tests for crisisctl.stats.LatencyHistogram and its bucket layout."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.stats import (
    MAX_TRACKABLE_US,
    SUMMARY_PERCENTILES,
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
    merge_all,
)

#: Percentiles checked against the exact nearest-rank value (decimal values, as users type them).
PERCENTILES = (0.1, 1.0, 10.0, 25.0, 33.3, 50.0, 66.6, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0)
MAX_INDEX = bucket_index(MAX_TRACKABLE_US)

values_us = st.integers(min_value=0, max_value=10**10)
# Mix small, mid and huge values so every bucket regime (exact, log-linear, clamped) is hit.
value_lists = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=3000),
        st.integers(min_value=0, max_value=10**7),
        values_us,
    ),
    min_size=1,
    max_size=300,
)


def _hist(values: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for v in values:
        hist.record_us(v)
    return hist


def _clamped(values: list[int]) -> list[int]:
    return [min(v, MAX_TRACKABLE_US) for v in values]


def _exact_percentile(sorted_values: list[int], pct: float) -> int:
    """Nearest-rank percentile: the ceil(p/100·n)-th smallest value (1-based), exact."""
    n = len(sorted_values)
    rank = max(1, math.ceil(Fraction(str(pct)) * n / 100))
    return sorted_values[min(rank, n) - 1]


# -- percentiles -----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(values=value_lists)
def test_percentiles_bound_the_exact_value(values: list[int]) -> None:
    hist = _hist(values)
    exact_sorted = sorted(_clamped(values))
    for pct in PERCENTILES:
        exact = _exact_percentile(exact_sorted, pct)
        got = hist.percentile(pct)
        assert got >= exact, (pct, got, exact)
        assert got - exact <= exact / 1024 + 1, (pct, got, exact)
        assert got <= hist.max_us
    # the one-pass form agrees with the single-percentile form, in the order asked for
    asked = list(reversed(PERCENTILES))
    assert hist.percentiles(asked) == [hist.percentile(p) for p in asked]


@settings(max_examples=100, deadline=None)
@given(values=value_lists)
def test_min_max_count_mean_are_exact(values: list[int]) -> None:
    hist = _hist(values)
    clamped = _clamped(values)
    assert hist.count == len(values) == len(hist)
    assert hist.min_us == min(clamped)
    assert hist.max_us == max(clamped)
    assert hist.sum_us == sum(clamped)
    assert hist.mean_us == sum(clamped) / len(clamped)
    assert hist.overflow == sum(1 for v in values if v > MAX_TRACKABLE_US)
    assert hist.percentile(100) == max(clamped)
    assert hist.percentile(0) == min(clamped)
    assert sum(n for _, _, n in hist.buckets()) == len(values)


def test_percentile_edge_cases() -> None:
    empty = LatencyHistogram()
    assert empty.percentile(50) == 0
    assert empty.percentiles([50, 99]) == [0, 0]
    assert empty.mean_us == 0.0
    assert empty.summary().count == 0

    hist = _hist([1000] * 99 + [10**6])
    assert hist.percentile(99) == 1000
    assert hist.percentile(99.5) == 10**6
    assert hist.percentile(150) == 10**6  # clamped to 100
    assert hist.percentile(-5) == 1000  # ≤ 0 is the minimum


def test_values_below_2048_are_exact() -> None:
    values = list(range(2048))
    hist = _hist(values)
    for pct in PERCENTILES:
        assert hist.percentile(pct) == _exact_percentile(values, pct)


def test_negative_values_count_as_zero_and_huge_values_are_clamped() -> None:
    hist = LatencyHistogram()
    hist.record_us(-50)
    hist.record_us(10**12)
    assert hist.min_us == 0
    assert hist.max_us == MAX_TRACKABLE_US
    assert hist.overflow == 1
    assert hist.percentile(100) == MAX_TRACKABLE_US


def test_record_with_repeat_count_and_seconds() -> None:
    a = LatencyHistogram()
    a.record_us(1234, n=5)
    b = _hist([1234] * 5)
    assert a.to_dict() == b.to_dict()
    c = LatencyHistogram()
    c.record_seconds(0.0012345)
    assert c.max_us == 1234 or c.max_us == 1235  # round-half-even of 1234.5 (float repr)
    c.record_seconds(2.5)
    assert c.max_us == 2_500_000


def test_summary_in_milliseconds() -> None:
    hist = _hist(list(range(1, 1001)))  # 1..1000 µs, all exact
    s = hist.summary()
    assert s.count == 1000
    assert s.min_ms == 0.001
    assert s.max_ms == 1.0
    assert s.p50_ms == 0.5
    assert s.p90_ms == 0.9
    assert s.p95_ms == 0.95
    assert s.p99_ms == 0.99
    assert s.p999_ms == 0.999
    assert s.mean_ms == 0.5  # 500.5 µs rounded to 3 decimals in ms
    d = s.as_dict()
    assert list(d) == ["count", "min", "mean", "p50", "p90", "p95", "p99", "p999", "max"]
    assert [name for name, _ in SUMMARY_PERCENTILES] == ["p50", "p90", "p95", "p99", "p999"]
    json.dumps(d)


# -- merging ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(a=value_lists, b=st.lists(values_us, max_size=200))
def test_merge_equals_recording_everything(a: list[int], b: list[int]) -> None:
    ha, hb, whole = _hist(a), _hist(b), _hist(a + b)
    ha.merge(hb)
    assert ha.to_dict() == whole.to_dict()
    assert ha.percentiles(PERCENTILES) == whole.percentiles(PERCENTILES)
    assert ha.summary() == whole.summary()
    # merge order does not matter, and the helpers agree
    hb2 = _hist(b)
    hb2.merge(_hist(a))
    assert hb2.to_dict() == whole.to_dict()
    assert merge_all([_hist(a), _hist(b)]).to_dict() == whole.to_dict()


def test_merge_into_empty_and_from_empty() -> None:
    full = _hist([5, 50_000, 7_000_000])
    empty = LatencyHistogram()
    empty.merge(full)
    assert empty.to_dict() == full.to_dict()
    before = full.to_dict()
    full.merge(LatencyHistogram())
    assert full.to_dict() == before


def test_copy_and_reset_are_independent() -> None:
    hist = _hist([1, 2, 3])
    clone = hist.copy()
    hist.record_us(10**6)
    assert clone.count == 3 and clone.max_us == 3
    hist.reset()
    assert hist.count == 0 and hist.to_dict() == LatencyHistogram().to_dict()
    assert clone.count == 3


# -- serialisation ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(values=st.lists(values_us, max_size=300))
def test_to_dict_from_dict_round_trip(values: list[int]) -> None:
    hist = _hist(values)
    data = json.loads(json.dumps(hist.to_dict()))
    restored = LatencyHistogram.from_dict(data)
    assert restored.to_dict() == hist.to_dict()
    assert restored.percentiles(PERCENTILES) == hist.percentiles(PERCENTILES)
    assert list(restored.buckets()) == list(hist.buckets())
    assert (restored.count, restored.sum_us, restored.min_us, restored.max_us) == (
        hist.count,
        hist.sum_us,
        hist.min_us,
        hist.max_us,
    )
    assert restored.overflow == hist.overflow


def _good() -> dict[str, Any]:
    return _hist([10, 20, 5000, 10**9]).to_dict()


def _without(key: str) -> dict[str, Any]:
    data = _good()
    del data[key]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    data = _good()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="empty"),
        pytest.param(_with(unit="ms"), id="unit"),
        pytest.param(_without("unit"), id="no-unit"),
        pytest.param(_with(sub_bucket_bits=10), id="sub-bits"),
        pytest.param(_without("sub_bucket_bits"), id="no-sub-bits"),
        pytest.param(_without("counts"), id="no-counts"),
        pytest.param(_without("count"), id="no-count"),
        pytest.param(_without("sum_us"), id="no-sum"),
        pytest.param(_without("min_us"), id="no-min"),
        pytest.param(_without("max_us"), id="no-max"),
        pytest.param(_with(count=999), id="count-mismatch"),
        pytest.param(_with(counts=[[5, -1]], count=-1), id="negative-count"),
        pytest.param(_with(counts=[[-5, 4]]), id="negative-index"),
        pytest.param(_with(counts=[[5]]), id="short-pair"),
        pytest.param(_with(counts=[[5, 2, 2]]), id="long-pair"),
        pytest.param(_with(counts=[["x", 4]]), id="non-numeric-index"),
        pytest.param(_with(counts=[None]), id="null-pair"),
        pytest.param(_with(counts=7), id="counts-not-a-list"),
        pytest.param(_with(count="many"), id="count-not-a-number"),
        pytest.param(_with(counts=[[1, 2], [1, 2]]), id="duplicate-index"),
    ],
)
def test_from_dict_rejects_bad_layouts(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(data)


def test_from_dict_accepts_missing_overflow() -> None:
    data = _good()
    del data["overflow"]
    assert LatencyHistogram.from_dict(data).overflow == 0


# -- Prometheus-style cumulative counts ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(values_us, max_size=300),
    bounds=st.lists(st.integers(min_value=0, max_value=10**10), max_size=20),
)
def test_cumulative_counts_match_brute_force(values: list[int], bounds: list[int]) -> None:
    hist = _hist(values)
    ascending = sorted(bounds)
    expected = [sum(1 for v in values if bucket_index(v) <= bucket_index(b)) for b in ascending]
    assert hist.cumulative_counts(ascending) == expected
    assert [hist.count_at_or_below(b) for b in ascending] == expected
    # exactness where buckets are exact (< 2048 µs)
    for b in ascending:
        if b < 2048:
            assert hist.count_at_or_below(b) == sum(1 for v in values if v <= b)


def test_cumulative_counts_small_example() -> None:
    hist = _hist([100, 200, 200, 5000, 10**6])
    assert hist.cumulative_counts([50, 100, 199, 200, 10**5, 10**7]) == [0, 1, 1, 3, 4, 5]


# -- bucket layout ---------------------------------------------------------------------------


def test_every_small_value_lies_in_its_own_bucket() -> None:
    for v in range(100_000):
        low, high = bucket_bounds(bucket_index(v))
        assert low <= v <= high, (v, low, high)


def test_buckets_are_contiguous_and_non_overlapping() -> None:
    # The whole index space, 0..MAX_INDEX (~23.5k buckets), which covers 0..MAX_TRACKABLE_US.
    previous_high = -1
    for index in range(MAX_INDEX + 1):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1, (index, low, previous_high)
        assert high >= low
        assert bucket_index(low) == index
        assert bucket_index(high) == index
        previous_high = high
    assert previous_high == MAX_TRACKABLE_US
    assert bucket_index(MAX_TRACKABLE_US + 1) == MAX_INDEX
    assert bucket_index(10**10) == MAX_INDEX
    assert bucket_index(-7) == 0


def test_bucket_width_bounds_relative_error() -> None:
    for index in range(2048, MAX_INDEX + 1):
        low, high = bucket_bounds(index)
        assert (high - low) * 1024 <= low, index


@settings(max_examples=200, deadline=None)
@given(value=st.integers(min_value=0, max_value=MAX_TRACKABLE_US))
def test_sampled_large_values_lie_in_their_bucket(value: int) -> None:
    index = bucket_index(value)
    low, high = bucket_bounds(index)
    assert low <= value <= high
    assert 0 <= index <= MAX_INDEX
    if index > 0:
        assert bucket_bounds(index - 1)[1] == low - 1
    if index < MAX_INDEX:
        assert bucket_bounds(index + 1)[0] == high + 1


@settings(max_examples=200, deadline=None)
@given(a=values_us, b=values_us)
def test_bucket_index_is_monotonic(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert bucket_index(low) <= bucket_index(high)


# -- memory bound ----------------------------------------------------------------------------


def test_one_million_values_touch_a_bounded_number_of_buckets() -> None:
    rng = random.Random(20240601)
    hist = LatencyHistogram()
    record = hist.record_us
    # Log-uniform over the whole range (so every power of two is covered), plus uniform values
    # that are mostly clamped above MAX_TRACKABLE_US.
    for _ in range(500_000):
        record(int(2 ** (rng.random() * 34)))
    for _ in range(500_000):
        record(rng.randrange(10**10 + 1))
    assert hist.count == 1_000_000
    assert len(hist._counts) <= MAX_INDEX + 1 <= 24_000
    assert len(hist._counts) > 20_000  # the test really spread values over the index space
    assert len(json.dumps(hist.to_dict())) < 24_000 * 20
