"""The leak rule's trend finder (crisisctl.watch.trend) and the leak rule built on it."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from crisisctl.watch.model import SeriesKey, labels_of
from crisisctl.watch.rules_eval import evaluate_rule, retention_for
from crisisctl.watch.rules_spec import RuleSpec
from crisisctl.watch.store import SeriesStore
from crisisctl.watch.trend import noise_of, recent_trend

T0 = 1_800_000_000.0
API = labels_of({"service": "api", "instance": "a:1"})


def points(values: list[float], step: float = 1.0) -> list[tuple[float, float]]:
    return [(T0 + step * i, v) for i, v in enumerate(values)]


def leak_rule(**fields: Any) -> RuleSpec:
    base: dict[str, Any] = {"name": "rss", "kind": "leak", "metric": "rss", "limit": 2e9}
    return TypeAdapter(RuleSpec).validate_python({**base, **fields})


# -- hand-computed cases -----------------------------------------------------------------------
def test_noise_is_read_from_second_differences() -> None:
    # d2 = |0-2+0|, |1-0+1|, |0-2+0| = 2, 2, 2: median 2 / (0.6745·√6) = 1.21 (the RMS without
    # the largest, 2/√6 = 0.82, is smaller)
    assert noise_of([0.0, 1.0, 0.0, 1.0, 0.0]) == pytest.approx(2 / (0.6744897 * math.sqrt(6)))
    # a straight line, flat or rising, has no noise; fewer than three values neither
    assert noise_of([5.0, 7.0, 9.0, 11.0]) == 0.0 and noise_of([1.0, 9.0]) == 0.0
    # one spike: d2 = 0, 0, 0, 0, 6, 12, 6, median 0; the RMS of d2/√6 without the 12:
    # √((36 + 36) / 6 / 6) = √2
    assert noise_of([0.0] * 6 + [6.0, 0.0, 0.0]) == pytest.approx(math.sqrt(2))


def test_a_linear_rise_is_found_two_intervals_after_it_began() -> None:
    flat = [0.0, 0.0, 0.0, 0.0]
    # one interval in: (0, 0, 15) has r² 0.75, (0, 0, 0, 15) 0.6, the whole 0.5: nothing yet
    assert recent_trend(points([*flat, 15.0]), min_samples=3, min_r2=0.8) is None
    # two intervals in: d2 = 0, 0, 15, 0, so σ̂ = 0; the suffix (0, 0, 15, 30) has r² 0.89 and
    # a line (SSE 0.3·225) beats its best step (SSE 0.5·225): it is the longest good one
    trend = recent_trend(points([*flat, 15.0, 30.0]), min_samples=3, min_r2=0.8)
    assert trend is not None
    assert trend.samples == 4 and trend.since == T0 + 2
    assert trend.slope == pytest.approx(10.5)  # sxy/sxx = (3.5·15)/5
    assert trend.r2 == pytest.approx(12.25 / 13.75)


def test_the_longest_good_suffix_wins_over_the_flat_part() -> None:
    # twelve 0s, then 10, 30: d2 = 0 … 0, 10, 10, so σ̂ = √(100/11/6) = 1.23 (ν 12, K 13.3:
    # a rise of 16.4 needed). Suffix (0, 0, 10, 30) has r² 0.83 but one jump explains it
    # better (step SSE 66.7 < line SSE 100); suffix (0, 10, 30): slope 15, r² 900/933.3,
    # rise 30, line SSE 16.7 < step SSE 50
    values = [0.0] * 12 + [10.0, 30.0]
    trend = recent_trend(points(values), min_samples=3, min_r2=0.8)
    assert trend is not None
    assert (trend.samples, trend.slope, trend.rise) == (3, pytest.approx(15.0), pytest.approx(30))
    assert trend.r2 == pytest.approx(900 / 933.333333)
    assert trend.noise == pytest.approx(math.sqrt(100 / 11 / 6))
    # with four samples required, nothing qualifies
    assert recent_trend(points(values), min_samples=4, min_r2=0.8) is None
    # the same rise in a six-point window: σ̂ = 5/(0.6745·√6) = 3.03, ν 4, K 24: 72.6 needed
    assert recent_trend(points(values[-6:]), min_samples=3, min_r2=0.8) is None


def test_a_step_up_is_not_a_leak() -> None:
    # (0, 0, 10, 10): r² exactly 0.8, but two levels explain it exactly
    assert recent_trend(points([0.0, 0.0, 10.0, 10.0]), min_samples=3, min_r2=0.8) is None
    series = [100.0] * 10 + [300.0] * 20
    for end in range(3, len(series) + 1):  # every moment of the step and after it
        assert recent_trend(points(series[:end]), min_samples=3, min_r2=0.5) is None, end


def test_a_rise_smaller_than_the_noise_is_not_a_trend() -> None:
    # alternating 0/1 noise: σ̂ = median d2 2 → 1.21; ν 7, K 17.1: a rise of 20.8 needed.
    # Then 0, 2, 4 (a rise of 4), or 0, 10, 20 (20): not enough
    noise = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert recent_trend(points([*noise, 2.0, 4.0]), min_samples=3, min_r2=0.8) is None
    assert recent_trend(points([*noise, 10.0, 20.0]), min_samples=3, min_r2=0.8) is None
    # 0, 15, 30: a rise of 30 (and (1, 0, 15, 30): r² 0.87, slope 10.2, a line beats a step)
    trend = recent_trend(points([*noise, 15.0, 30.0]), min_samples=3, min_r2=0.8)
    assert trend is not None and trend.samples == 4


# -- properties --------------------------------------------------------------------------------
@settings(derandomize=True, max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(1e3, 1e7), n=st.integers(12, 200))
def test_flat_gaussian_noise_never_reads_as_a_trend(seed: int, sigma: float, n: int) -> None:
    rng = random.Random(seed)
    values = [5e8 + rng.gauss(0.0, sigma) for _ in range(n)]
    for end in range(12, n + 1, max(1, n // 20)):
        assert recent_trend(points(values[:end], 10.0), min_samples=3, min_r2=0.8) is None


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sigma=st.floats(1e3, 1e6),
    flat=st.integers(10, 100),
    per_interval=st.floats(30.0, 1000.0),
)
def test_a_rise_well_above_the_noise_is_found_after_two_intervals(
    seed: int, sigma: float, flat: int, per_interval: float
) -> None:
    """Ten or more flat noisy samples, then a rise of ≥ 30σ per interval from the last flat
    point on."""
    rng = random.Random(seed)
    rise = per_interval * sigma
    values = [5e8 + rng.gauss(0.0, sigma) for _ in range(flat)]
    values += [5e8 + rise * k + rng.gauss(0.0, sigma) for k in (1, 2)]
    trend = recent_trend(points(values, 10.0), min_samples=3, min_r2=0.8)
    assert trend is not None
    assert 0.5 * rise / 10.0 < trend.slope < 1.5 * rise / 10.0


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sigma=st.floats(1e3, 1e6),
    before=st.integers(3, 60),
    after=st.integers(1, 60),
    height=st.floats(50.0, 1e4),
)
def test_a_step_then_flat_never_reads_as_a_trend(
    seed: int, sigma: float, before: int, after: int, height: float
) -> None:
    rng = random.Random(seed)
    values = [5e8 + rng.gauss(0.0, sigma) for _ in range(before)]
    values += [5e8 + height * sigma + rng.gauss(0.0, sigma) for _ in range(after)]
    for end in range(3, len(values) + 1):
        assert recent_trend(points(values[:end], 10.0), min_samples=3, min_r2=0.8) is None


# -- the leak rule against the store -----------------------------------------------------------
def test_a_new_leak_after_a_flat_half_hour_fires_two_intervals_in() -> None:
    """The whole 30-minute window is flat but for the last two samples: judged on its own."""
    leak = leak_rule(window=1800, warmup=0, min_samples=3, horizon=6 * 3600)
    store = SeriesStore(retention_for([leak]), 10.0)
    key = SeriesKey("rss", API)
    rng = random.Random(7)
    t = T0
    for _ in range(180):
        store.add(key, t, 5e8 + rng.gauss(0.0, 2e5))
        assert evaluate_rule(leak, store, t) == []
        t += 10.0
    slope = 1e6  # 1 MB/s: 10 MB per interval, 50σ
    store.add(key, t, 5e8 + slope * 10)
    assert evaluate_rule(leak, store, t) == []  # one interval: not yet a trend
    store.add(key, t + 10, 5e8 + slope * 20)
    (finding,) = evaluate_rule(leak, store, t + 10)
    assert finding.evidence["samples"] in (3, 4)  # the two new ones, the last flat one(s)
    # the last flat point in the fit bends the slope down (0.7× here) until more points come
    assert 0.6 * slope < finding.evidence["slope_per_s"] < 1.1 * slope
    assert "rss grows" in finding.summary


def test_the_default_rule_still_needs_ten_samples_of_trend() -> None:
    leak = leak_rule(window=1800, warmup=0)
    store = SeriesStore(retention_for([leak]), 10.0)
    key = SeriesKey("rss", API)
    for i in range(60):
        store.add(key, T0 + 10 * i, 5e8)
    fired = []
    for k in range(1, 12):
        t = T0 + 10 * (59 + k)
        store.add(key, t, 5e8 + 1e7 * k)
        fired.append(bool(evaluate_rule(leak, store, t)))
    # the 10 newest points are a line good enough (r² ≥ 0.8, better than a step) from the 5th
    # rising sample on: five flat, five rising
    assert fired == [False] * 4 + [True] * 7
