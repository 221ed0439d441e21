"""The baseline's spread (probe/spread.py) and how triage grades a factor with it (verdict.py).

The bootstrap's shortcut is pinned to the plain resampling it replaces; the properties say what
a user relies on: a run drawn from the baseline's own distribution is OK, a real 2× slowdown
measured on enough requests is at least P2.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.probe.http import ProbeResult
from crisisctl.probe.plan import BaselineRef, plan_triage
from crisisctl.probe.profile import (
    baseline_count,
    baseline_p95,
    baseline_rounds,
    profile_from_reports,
)
from crisisctl.probe.sampling import Operation, OperationStats
from crisisctl.probe.spread import (
    factor_interval,
    family_confidence,
    healthy_ratio_range,
    quantile,
    rank,
    resampled_quantile,
    resampled_quantile_reference,
)
from crisisctl.probe.verdict import build_report, judge_latency
from crisisctl.severity import Severity, severity_for_factor

URL = "http://127.0.0.1:8000"
OP = "GET /a"


def _binomial_at_least(n: int, p: float, r: int) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(r, n + 1))


# -- the bootstrap's p95 of a resample ---------------------------------------------------------


def test_rank_is_the_nearest_rank_of_the_histograms() -> None:
    assert [rank(n) for n in (1, 2, 19, 20, 21, 100)] == [1, 2, 19, 19, 20, 95]
    assert quantile([1.0, 2.0, 3.0]) == 3.0
    with pytest.raises(ValueError):
        quantile([])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    values=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=25),
    n=st.integers(min_value=1, max_value=60),
)
def test_the_beta_shortcut_draws_like_plain_resampling(values: list[int], n: int) -> None:
    """P(p95 of n draws ≤ x₍ⱼ₎) = P(Binomial(n, j/m) ≥ ⌈0.95 n⌉), for both implementations."""
    ordered = sorted(float(v) for v in values)
    m, r, draws = len(ordered), rank(n), 3000
    fast_rng, plain_rng = random.Random(1), random.Random(2)
    fast = [resampled_quantile(ordered, n, fast_rng) for _ in range(draws)]
    plain = [resampled_quantile_reference(ordered, n, plain_rng) for _ in range(draws)]
    for j in range(1, m + 1):
        if j < m and ordered[j - 1] == ordered[j]:
            continue  # ties: only the last copy of a value is a distinct point of the CDF
        exact = _binomial_at_least(n, j / m, r)
        for sample in (fast, plain):
            seen = sum(v <= ordered[j - 1] for v in sample) / draws
            assert abs(seen - exact) < 0.04, (j, seen, exact)


# -- the healthy range and the factor's interval -----------------------------------------------


def _draw(
    rng: random.Random, median: float, sigma: float, n: int, scale: float = 1.0
) -> list[float]:
    return [scale * median * rng.lognormvariate(0.0, sigma) for _ in range(n)]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    median=st.floats(min_value=0.5, max_value=2000),
    sigma=st.floats(min_value=0.01, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_runs_from_the_baselines_own_distribution_are_ok(
    median: float, sigma: float, seed: int
) -> None:
    rng = random.Random(seed)
    rounds = [_draw(rng, median, sigma, 20) for _ in range(5)]
    reference = quantile(sorted(v for r in rounds for v in r))
    healthy = healthy_ratio_range(rounds, 20)
    graded = []
    for _ in range(50):
        factor = quantile(sorted(_draw(rng, median, sigma, 20))) / reference
        graded.append(severity_for_factor(factor, factor_interval(factor, healthy)))
    assert sum(g is not Severity.OK for g in graded) <= 1


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    median=st.floats(min_value=0.5, max_value=2000),
    sigma=st.floats(min_value=0.01, max_value=0.25),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_2x_slowdown_on_enough_requests_is_at_least_p2(
    median: float, sigma: float, seed: int
) -> None:
    rng = random.Random(seed)
    rounds = [_draw(rng, median, sigma, 40) for _ in range(10)]
    reference = quantile(sorted(v for r in rounds for v in r))
    run = _draw(rng, median, sigma, 100, scale=2.0)
    factor = quantile(sorted(run)) / reference
    interval = factor_interval(factor, healthy_ratio_range(rounds, len(run)))
    assert interval.low > 1.0
    assert severity_for_factor(factor, interval) >= Severity.P2


def test_the_interval_inverts_the_healthy_range() -> None:
    interval = factor_interval(1.2, (0.8, 1.5), 0.99)
    assert interval.low == pytest.approx(0.8) and interval.high == pytest.approx(1.5)
    assert interval.confidence == 0.99 and not interval.significant
    assert factor_interval(1.6, (0.8, 1.5)).significant


def test_the_same_data_give_the_same_range_and_more_rounds_a_narrower_one() -> None:
    rng = random.Random(7)
    rounds = [_draw(rng, 20.0, 0.2, 20) for _ in range(20)]
    assert healthy_ratio_range(rounds, 20) == healthy_ratio_range(rounds, 20)
    few = healthy_ratio_range(rounds[:3], 20)
    many = healthy_ratio_range(rounds, 20)
    assert few[1] / few[0] > many[1] / many[0]
    low, high = healthy_ratio_range([[5.0] * 20], 20)
    assert low == high == 1.0  # a service that never varies: any slowdown is significant
    low, high = healthy_ratio_range([[0.0, 0.0, 1.0]], 3)  # 0 ms readings stay finite
    assert 0 < low <= high < math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": [[]], "n": 5}, "no latency samples"),
        ({"rounds": [[1.0]], "n": 0}, "at least 1 request"),
        ({"rounds": [[1.0]], "n": 5, "confidence": 1.0}, "between 0 and 1"),
        ({"rounds": [[1.0]], "n": 5, "resamples": 10}, "resamples"),
    ],
)
def test_healthy_range_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        healthy_ratio_range(**kwargs)


def test_family_confidence_splits_the_false_alarm_rate() -> None:
    assert family_confidence(0.99, 1) == pytest.approx(0.99)
    assert family_confidence(0.99, 4) == pytest.approx(0.9975)
    assert family_confidence(0.99, 0) == pytest.approx(0.99)


# -- profiles with rounds, and old ones without ------------------------------------------------


def _stats(latencies: list[float], name: str = OP) -> OperationStats:
    method, path = name.split(" ", 1)
    stats = OperationStats(Operation(method, path), len(latencies))
    for ms in latencies:
        stats.add(ProbeResult(operation=name, status=200, total_ms=ms))
    return stats


def _round_report(latencies: list[float]) -> dict[str, Any]:
    stats = _stats(latencies)
    return {
        "url": URL,
        "started_at": "2026-01-01T00:00:00Z",
        "error_rate": 0.0,
        "sampling": {"per_operation": len(latencies), "sent": len(latencies), "failed": 0},
        "operations": [stats.as_dict()],
        "host": {"collected": False},
    }


def _ref(profile: dict[str, Any]) -> BaselineRef:
    now = datetime.now(UTC)
    return BaselineRef("prod", profile, now, now + timedelta(hours=1))


def test_a_profile_keeps_every_round() -> None:
    rng = random.Random(3)
    rounds = [_draw(rng, 20.0, 0.1, 20) for _ in range(3)]
    profile = profile_from_reports([_round_report(r) for r in rounds])
    assert profile["version"] == 2 and profile["rounds"] == 3
    assert baseline_rounds(profile, OP) == [[round(v, 3) for v in r] for r in rounds]
    assert baseline_count(profile, OP) == 60
    pooled = sorted(v for r in rounds for v in r)
    assert baseline_p95(profile, OP) == pytest.approx(quantile(pooled), rel=2e-3)
    assert profile["operations"][OP]["error_rate"] == 0.0


def test_an_old_profile_without_samples_still_loads_and_falls_back_to_the_runs_spread() -> None:
    old = {"operations": {OP: {"method": "GET", "path": "/a", "count": 20, "p95": 20.0}}}
    assert baseline_rounds(old, OP) is None and baseline_count(old, OP) == 20
    plan = plan_triage(f"{URL}/a", baseline=_ref(old))
    assert any("kept no latency samples" in w and "save it again" in w for w in plan.warnings)
    rng = random.Random(5)
    judged = judge_latency(plan, [_stats(_draw(rng, 20.0, 0.05, 20))])
    assert judged[0].spread == "run" and judged[0].interval is not None
    slow = judge_latency(plan, [_stats(_draw(rng, 60.0, 0.05, 20))])
    assert slow[0].severity is Severity.P1 and slow[0].interval.low > 1.0  # type: ignore[union-attr]


def test_triage_report_gives_the_ratio_and_its_interval_per_operation() -> None:
    rng = random.Random(11)
    profile = profile_from_reports([_round_report(_draw(rng, 20.0, 0.1, 20)) for _ in range(5)])
    plan = plan_triage(URL, baseline=_ref(profile), collect_host=False)
    same = _stats(_draw(rng, 20.0, 0.1, 20))
    report = build_report(plan, "2026-01-01T00:00:00Z", 0.0, {"ok": True, "status": 200,
                          "path": "/health"}, {}, [same], {"collected": False})  # fmt: skip
    assert report["severity"] == "OK"
    entry = report["reference"]["per_operation"][OP]
    assert entry["spread"] == "baseline" and entry["severity"] == "OK"
    assert entry["interval"]["low"] <= 1.0 < entry["interval"]["high"]
    assert report["degradation_factor_interval"] == entry["interval"]
    latency = next(r for r in report["reasons"] if r["signal"] == "latency")
    assert "99 % CI" in latency["message"] and "within the baseline's spread" in latency["message"]
    assert not any("kept no latency samples" in w for w in report["warnings"])


def test_with_several_operations_each_gets_a_share_of_the_false_alarm_rate() -> None:
    rng = random.Random(13)
    reports = []
    for _ in range(5):
        a, b = _stats(_draw(rng, 20.0, 0.1, 20)), _stats(_draw(rng, 50.0, 0.1, 20), "GET /b")
        report = _round_report([])
        report["operations"] = [a.as_dict(), b.as_dict()]
        reports.append(report)
    plan = plan_triage(URL, baseline=_ref(profile_from_reports(reports)))
    judged = judge_latency(plan, [_stats(_draw(rng, 20.0, 0.1, 20)),
                                  _stats(_draw(rng, 150.0, 0.1, 20), "GET /b")])  # fmt: skip
    assert [j.interval.confidence for j in judged] == [pytest.approx(0.995)] * 2  # type: ignore[union-attr]
    assert judged[0].severity is Severity.OK and judged[1].severity is Severity.P1
