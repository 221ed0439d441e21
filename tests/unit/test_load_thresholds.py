"""Thresholds: the k6-like expression parser (property tests), evaluation and early aborts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load.thresholds import (
    ABORT_MIN_REQUESTS,
    DEFAULT_DROPPED_RATE,
    ScopeStats,
    ThresholdError,
    abort_due,
    evaluate,
    parse_threshold,
    with_defaults,
)
from crisisctl.stats import LatencyHistogram

OPS = ["<", "<=", ">", ">=", "==", "!="]
LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "": 1.0}
spaces = st.sampled_from(["", " ", "  ", "\t"])
numbers = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False)


@given(
    st.sampled_from(["p50", "p90", "p95", "p99", "p99.9", "avg", "min", "max"]),
    st.sampled_from(OPS),
    numbers,
    st.sampled_from(sorted(LATENCY_UNITS)),
    spaces,
    spaces,
)
def test_latency_thresholds_parse(
    metric: str, op: str, number: object, unit: str, s1: str, s2: str
) -> None:
    text = f"{metric}{s1}{op}{s2}{number}{unit}"
    t = parse_threshold(text)
    assert (t.metric, t.op, t.kind) == (metric, op, "latency")
    assert math.isclose(t.limit, float(str(number)) * LATENCY_UNITS[unit], rel_tol=1e-12)
    # the canonical text parses to the same threshold
    again = parse_threshold(t.expression)
    assert (again.metric, again.op, again.limit) == (t.metric, t.op, t.limit)


@given(
    st.sampled_from(["error_rate", "checks"]),
    st.sampled_from(OPS),
    st.integers(min_value=0, max_value=10_000),
    st.booleans(),
)
def test_rate_thresholds_parse(metric: str, op: str, basis_points: int, percent: bool) -> None:
    fraction = basis_points / 10_000
    text = f"{metric} {op} {basis_points / 100}%" if percent else f"{metric}{op}{fraction}"
    t = parse_threshold(text)
    assert t.kind == "rate" and math.isclose(t.limit, fraction, abs_tol=1e-12)


@given(st.floats(min_value=0.001, max_value=100), st.sampled_from(["p", "p("]))
def test_any_percentile(pct: float, style: str) -> None:
    text = f"{style}{pct:g}{')' if style == 'p(' else ''} < 5"
    t = parse_threshold(text)
    assert t.percentile == pytest.approx(float(f"{pct:g}"))


@given(st.text(max_size=40))
def test_garbage_raises_only_threshold_errors(text: str) -> None:
    try:
        t = parse_threshold(text)
    except ThresholdError as exc:
        assert str(exc).endswith(".")
    else:
        assert t.op in OPS and math.isfinite(t.limit)


@pytest.mark.parametrize(
    ("text", "metric", "limit"),
    [
        ("p95 < 300ms", "p95", 300.0),
        ("p(99) < 1s", "p99", 1000.0),
        ("p999 < 2s", "p99.9", 2000.0),
        ("med <= 500us", "p50", 0.5),
        ("error_rate < 1%", "error_rate", 0.01),
        ("checks > 0.99", "checks", 0.99),
        ("rps > 200", "rps", 200.0),
        ("requests >= 1000", "requests", 1000.0),
        ("MAX < 2.5S", "max", 2500.0),
    ],
)
def test_examples(text: str, metric: str, limit: float) -> None:
    t = parse_threshold(text)
    assert t.metric == metric and t.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("p95 300ms", "not a threshold"),
        ("latency < 3", "not a metric"),
        ("p101 < 3", "percentile"),
        ("p0 < 3", "percentile"),
        ("error_rate < 5", "between 0 and 1"),
        ("error_rate < 5ms", "takes %"),
        ("rps > 5ms", "plain number"),
        ("p95 < 3 parsecs", "latency takes"),
        ("", "expression"),
    ],
)
def test_bad_expressions(text: str, why: str) -> None:
    with pytest.raises(ThresholdError, match=why):
        parse_threshold(text)


def _stats(latencies_ms: list[float], errors: int = 0, unexpected: int = 0) -> ScopeStats:
    hist = LatencyHistogram()
    for ms in latencies_ms:
        hist.record_us(int(ms * 1000))
    requests = len(latencies_ms) + errors
    return ScopeStats(requests, len(latencies_ms), errors, unexpected, hist, duration_s=10.0)


def test_evaluate_values_and_verdicts() -> None:
    stats = _stats([10.0] * 90 + [500.0] * 10, errors=5, unexpected=5)
    ops = {"slow": _stats([900.0] * 4)}
    thresholds = [
        parse_threshold("p50 < 20ms"),
        parse_threshold("p95 < 300ms"),
        parse_threshold("error_rate < 5%"),
        parse_threshold("checks > 90%"),
        parse_threshold("rps >= 10"),
        parse_threshold("requests == 105"),
        parse_threshold("max < 1s", operation="slow"),
        parse_threshold("p99 < 1s", operation="ghost"),
    ]
    results = evaluate(thresholds, lambda op: stats if op is None else ops.get(op))
    got = {(r.threshold.label(), r.passed) for r in results}
    assert got == {
        ("p50 < 20ms", True),
        ("p95 < 300ms", False),  # 500 ms
        ("error_rate < 5%", False),  # 10 / 105
        ("checks > 90%", True),  # 95 / 100
        ("rps >= 10", True),  # 105 / 10 s
        ("requests == 105", True),
        ("max < 1s [slow]", True),
        ("p99 < 1s [ghost]", False),  # no such operation: no data fails
    }
    by_label = {r.threshold.label(): r for r in results}
    assert by_label["p95 < 300ms"].value == pytest.approx(500.0, rel=1e-3)
    assert by_label["error_rate < 5%"].as_dict()["value"] == pytest.approx(10 / 105, abs=1e-6)
    assert by_label["p99 < 1s [ghost]"].value is None


def test_abort_due_rules() -> None:
    rate = parse_threshold("error_rate < 1%", abort_on_fail=True, delay_abort_eval_s=2.0)
    few = _stats([1.0] * 10, errors=10)
    many = _stats([1.0] * ABORT_MIN_REQUESTS, errors=10)
    assert not abort_due(rate, many, elapsed_s=1.0)  # before delay_abort_eval
    assert not abort_due(rate, few, elapsed_s=5.0)  # too few requests to judge
    assert abort_due(rate, many, elapsed_s=5.0)
    assert not abort_due(parse_threshold("error_rate < 1%"), many, 5.0)  # no abort_on_fail
    # monotone figures fail for good at once
    assert abort_due(parse_threshold("max < 5ms", abort_on_fail=True), _stats([9.0]), 0.0)
    assert abort_due(parse_threshold("requests < 5", abort_on_fail=True), _stats([1.0] * 5), 0)
    # known only at the end
    assert not abort_due(parse_threshold("requests > 1000000000", abort_on_fail=True), many, 9.0)
    assert not abort_due(parse_threshold("rps > 100000", abort_on_fail=True), many, 9.0)


# -- dropped arrivals ------------------------------------------------------------------------
def test_dropped_rate_is_dropped_over_scheduled_arrivals() -> None:
    t = parse_threshold("dropped_rate < 1%")
    assert (t.metric, t.kind, t.limit) == ("dropped_rate", "rate", pytest.approx(0.01))
    stats = ScopeStats(90, 90, 0, 0, LatencyHistogram(), 1.0, dropped=10)
    assert stats.value("dropped_rate") == pytest.approx(0.1)
    assert stats.value("error_rate") == 0.0  # dropped arrivals are not failed requests
    (verdict,) = evaluate([t], lambda op: stats)
    assert not verdict.passed and verdict.value == pytest.approx(0.1)
    assert verdict.as_dict()["unit"] == "fraction" and verdict.as_dict()["default"] is False
    clean = ScopeStats(100, 100, 0, 0, LatencyHistogram(), 1.0)
    assert evaluate([t], lambda op: clean)[0].passed


def test_dropped_rate_belongs_to_the_whole_run() -> None:
    with pytest.raises(ThresholdError, match="whole run"):
        parse_threshold("dropped_rate < 1%", operation="get client")


def test_open_runs_get_a_default_dropped_rate_threshold_unless_they_set_one() -> None:
    given_ = [parse_threshold("p95 < 300ms")]
    (p95, default) = with_defaults(given_, open_model=True)
    assert p95 is given_[0] and default.default and default.expression == DEFAULT_DROPPED_RATE
    assert default.metric == "dropped_rate" and default.limit == pytest.approx(0.01)
    assert with_defaults(given_, open_model=False) == given_
    own = [parse_threshold("dropped_rate < 5%")]
    assert with_defaults(own, open_model=True) == own


def test_dropped_rate_never_aborts_a_run_early() -> None:
    t = parse_threshold("dropped_rate < 1%", abort_on_fail=True)
    stats = ScopeStats(500, 500, 0, 0, LatencyHistogram(), 5.0, dropped=500)
    assert not abort_due(t, stats, 5.0)  # drops are only all counted at the end
