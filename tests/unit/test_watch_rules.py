"""The rules' arithmetic (crisisctl.watch.rules): hand-computed cases and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.severity import Severity
from crisisctl.watch.rules import (
    BurnPair,
    breach_severity_of,
    budget_spent,
    burn_rate,
    format_eta,
    judge_burn,
    least_squares,
    step_worse,
    time_to_limit,
    zscore,
)

OK, P3, P2, P1, P0 = Severity.OK, Severity.P3, Severity.P2, Severity.P1, Severity.P0
HOUR = 3600.0
DAY = 86_400.0


# -- threshold: the seeds' breach ratio ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "bound", "expected"),
    [
        (100.0, 100.0, OK),  # not a breach
        (150.0, 100.0, P3),  # ratio 1.5: "low"
        (200.0, 100.0, P3),  # ratio 2 is not > 2
        (201.0, 100.0, P2),  # "medium"
        (301.0, 100.0, P1),  # "high"
        (500.0, 100.0, P1),  # 5 is not > 5
        (600.0, 100.0, P0),  # "critical"
    ],
)
def test_breach_ratio_severity(value: float, bound: float, expected: Severity) -> None:
    assert breach_severity_of(value, bound) is expected


def test_breach_below_uses_the_inverse_ratio() -> None:
    assert breach_severity_of(0.9, 1.0, below=True) is P3
    assert breach_severity_of(0.25, 1.0, below=True) is P1  # 1 / 0.25 = 4 > 3
    assert breach_severity_of(0.0, 1.0, below=True) is P0
    assert breach_severity_of(1.0, 1.0, below=True) is OK


@settings(max_examples=200, deadline=None)
@given(st.floats(0.001, 1e6), st.floats(0.001, 1e6), st.floats(1.0, 100.0, exclude_min=False))
def test_breach_severity_is_monotone(bound: float, value: float, more: float) -> None:
    assert breach_severity_of(value * more, bound) >= breach_severity_of(value, bound)


def test_step_worse() -> None:
    assert [step_worse(s) for s in (OK, P3, P2, P1, P0)] == [P3, P2, P1, P0, P0]


# -- burn rate: the SRE workbook's numbers -------------------------------------------------------
def test_workbook_fast_burn_is_two_percent_of_a_30_day_budget() -> None:
    rate = burn_rate(bad=144.0, total=10_000.0, objective=0.999)  # 1.44 % errors, 0.1 % budget
    assert rate == pytest.approx(14.4)
    assert budget_spent(14.4, HOUR, 30 * DAY) == pytest.approx(0.02)
    assert budget_spent(6.0, 6 * HOUR, 30 * DAY) == pytest.approx(0.05)
    assert budget_spent(3.0, DAY, 30 * DAY) == pytest.approx(0.10)
    assert budget_spent(1.0, 3 * DAY, 30 * DAY) == pytest.approx(0.10)


def test_burn_rate_without_events_is_none() -> None:
    assert burn_rate(0.0, 0.0, 0.999) is None


def _pair(
    long_bad: float,
    long_total: float,
    short_bad: float,
    short_total: float,
    factor: float = 14.4,
    severity: Severity = P1,
) -> BurnPair:
    return BurnPair(HOUR, 300.0, factor, severity, long_bad, long_total, short_bad, short_total)


def test_both_windows_must_exceed() -> None:
    # 2 % errors against a 99.9 % objective: burn 20× in both windows → page
    assert judge_burn([_pair(200, 10_000, 20, 1000)], 0.999, 100).severity is P1
    # the long window burns but the short one has recovered (0.1 %): no page
    assert judge_burn([_pair(200, 10_000, 1, 1000)], 0.999, 100).severity is OK
    # a short spike alone does not page either
    assert judge_burn([_pair(10, 10_000, 50, 1000)], 0.999, 100).severity is OK


def test_exactly_the_factor_does_not_fire() -> None:
    assert judge_burn([_pair(144, 10_000, 144, 10_000)], 0.999, 100).severity is OK


def test_min_events_guard_three_requests_at_night() -> None:
    judgement = judge_burn([_pair(3, 3, 3, 3)], 0.999, 100)  # 100 % errors, 3 requests
    assert judgement.severity is OK
    assert judge_burn([_pair(3, 3, 3, 3)], 0.999, 3).severity is P1


def test_the_worst_firing_pair_wins() -> None:
    ticket = BurnPair(DAY, 7200.0, 3.0, P3, 50, 10_000, 5, 1000)  # 5× > 3×
    page = _pair(50, 10_000, 5, 1000)  # 5× < 14.4×
    judgement = judge_burn([page, ticket], 0.999, 100)
    assert judgement.severity is P3 and judgement.fired is ticket
    assert judgement.long_rate == pytest.approx(5.0)
    assert [p["fires"] for p in judgement.pairs] == [False, True]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(1, 10_000),
    st.integers(1, 50),
    st.sampled_from([0.9, 0.99, 0.999]),
)
def test_burn_judgement_depends_on_shares_only(
    bad: int, extra: int, scale: int, slo: float
) -> None:
    total = bad + extra
    one = judge_burn([_pair(bad, total, bad, total)], slo, 0).severity
    many = judge_burn([_pair(bad * scale, total * scale, bad, total)], slo, 0).severity
    assert one is many


# -- anomaly -------------------------------------------------------------------------------------
def test_zscore_hand_computed() -> None:
    scored = zscore([1.0, 2.0, 3.0, 4.0, 5.0], 8.0, min_samples=5)
    assert scored is not None
    z, mean, deviation = scored
    assert mean == 3.0
    assert deviation == pytest.approx(math.sqrt(2.5))
    assert z == pytest.approx(5.0 / math.sqrt(2.5))


def test_zscore_ignores_sparse_and_flat_history() -> None:
    assert zscore([1.0, 2.0], 9.0, min_samples=3) is None
    assert zscore([5.0] * 50, 6.0, min_samples=3) is None  # no deviation at all
    steady = [100.0, 100.1] * 20  # deviation 0.05 %: tiny against a mean of 100
    assert zscore(steady, 101.0, min_samples=3, relative_deviation=0.01) is None
    assert zscore(steady, 101.0, min_samples=3, min_deviation=1.0) is None
    assert zscore(steady, 101.0, min_samples=3) is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=5, max_size=40),
    st.floats(-1e3, 1e3),
    st.floats(0.1, 100.0),
    st.floats(-1e3, 1e3),
)
def test_zscore_is_affine_invariant(history: list[float], value: float, a: float, b: float) -> None:
    base = zscore(history, value, min_samples=5, min_deviation=1e-3)
    moved = zscore([a * x + b for x in history], a * value + b, min_samples=5, min_deviation=1e-2)
    if base is not None and moved is not None:
        assert moved[0] == pytest.approx(base[0], rel=1e-6, abs=1e-6)


# -- leak ----------------------------------------------------------------------------------------
def test_least_squares_exact_line() -> None:
    fit = least_squares([(t, 2.0 * t + 1.0) for t in (0.0, 10.0, 20.0, 30.0)])
    assert fit is not None
    slope, intercept, r2 = fit
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(1.0) and r2 == 1.0


def test_least_squares_hand_computed_noisy() -> None:
    # points (0,1) (1,3) (2,2) (3,5): slope 1.1, intercept 1.1, r² = 6.05 / 8.75
    fit = least_squares([(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 5.0)])
    assert fit is not None
    assert fit[0] == pytest.approx(1.1) and fit[1] == pytest.approx(1.1)
    assert fit[2] == pytest.approx(6.05 / 8.75)


def test_least_squares_needs_two_times() -> None:
    assert least_squares([(1.0, 2.0)]) is None
    assert least_squares([(1.0, 2.0), (1.0, 3.0)]) is None


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-1e3, 1e3),
    st.floats(-1e6, 1e6),
    st.floats(1.7e9, 1.8e9),
    st.lists(st.floats(1.0, 60.0), min_size=2, max_size=30),
)
def test_least_squares_recovers_any_line(
    slope: float, icpt: float, t0: float, gaps: list[float]
) -> None:
    times = [t0]
    for gap in gaps:
        times.append(times[-1] + gap)
    fit = least_squares([(t, slope * (t - t0) + icpt) for t in times])
    assert fit is not None
    assert fit[0] == pytest.approx(slope, rel=1e-6, abs=1e-6)
    assert 0.0 <= fit[2] <= 1.0


def test_oom_eta() -> None:
    # 1.5 GB used, growing 100 MB per 19 minutes towards 2 GB: 500 MB in 95 minutes
    slope = 100e6 / (19 * 60)
    eta = time_to_limit(1.5e9, slope, 2e9)
    assert eta == pytest.approx(95 * 60)
    assert format_eta(95 * 60) == "~1 h 35 m"
    assert format_eta(3 * HOUR + 10 * 60) == "~3 h 10 m"
    assert time_to_limit(2.1e9, slope, 2e9) == 0.0
    assert time_to_limit(1e9, 0.0, 2e9) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "~0 s"),
        (45, "~45 s"),
        (60, "~1 m"),
        (720, "~12 m"),
        (3600, "~1 h"),
        (49 * HOUR, "~2 d 1 h"),
        (72 * HOUR, "~3 d"),
    ],
)
def test_format_eta(seconds: float, text: str) -> None:
    assert format_eta(seconds) == text
