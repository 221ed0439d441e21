"""Unit tests for crisisctl.severity: thresholds, verdicts, messages and properties."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.severity import (
    ERROR_RATE_THRESHOLDS,
    LATENCY_FACTOR_THRESHOLDS,
    FactorInterval,
    Reason,
    Severity,
    Verdict,
    breach_severity,
    classify,
    degradation_factor,
    severity_for_error_rate,
    severity_for_factor,
)

OK, P3, P2, P1, P0 = Severity.OK, Severity.P3, Severity.P2, Severity.P1, Severity.P0

# -- Severity enum ---------------------------------------------------------------------------


def test_ordering_worse_is_greater() -> None:
    assert OK < P3 < P2 < P1 < P0
    assert max([P3, P0, OK, P1]) is P0
    assert sorted([P0, OK, P2, P3, P1]) == [OK, P3, P2, P1, P0]
    assert [int(s) for s in (OK, P3, P2, P1, P0)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p0", P0),
        ("P0", P0),
        ("p1", P1),
        ("P1", P1),
        ("p2", P2),
        ("P3", P3),
        ("ok", OK),
        ("OK", OK),
        ("Ok", OK),
        (" p1 ", P1),
    ],
)
def test_parse_accepts_names_case_insensitively(text: str, expected: Severity) -> None:
    assert Severity.parse(text) is expected


@pytest.mark.parametrize("text", ["", "p5", "P", "critical", "0", "4", "P 1", "okay", "-1"])
def test_parse_rejects_unknown_names(text: str) -> None:
    with pytest.raises(ValueError, match="unknown severity") as info:
        Severity.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert "P0" in message and "OK" in message
    assert "\n" not in message


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="unknown severity"):
        Severity.parse(1)  # type: ignore[arg-type]


def test_str_is_the_name() -> None:
    assert str(P1) == "P1"
    assert f"{OK}" == "OK"
    assert [Severity.parse(str(s)) for s in Severity] == list(Severity)


@pytest.mark.parametrize(
    ("sev", "label", "response_time", "hours", "escalation", "impact"),
    [
        (
            P0,
            "P0 critical emergency",
            "immediate (0-4 hours)",
            (0, 4),
            "all hands on deck",
            "complete service disruption",
        ),
        (
            P1,
            "P1 major performance crisis",
            "urgent (4-24 hours)",
            (4, 24),
            "performance team lead",
            "major user experience degradation",
        ),
        (
            P2,
            "P2 moderate performance issue",
            "high priority (24-72 hours)",
            (24, 72),
            "standard team assignment",
            "user experience affected",
        ),
        (
            P3,
            "P3 minor optimization opportunity",
            "standard priority (1-2 weeks)",
            (168, 336),
            "regular sprint planning",
            "optimization opportunity",
        ),
        (OK, "OK within target", None, None, None, None),
    ],
)
def test_severity_properties(
    sev: Severity,
    label: str,
    response_time: str | None,
    hours: tuple[float, float] | None,
    escalation: str | None,
    impact: str | None,
) -> None:
    assert sev.label == label
    assert sev.response_time == response_time
    assert sev.response_hours == hours
    assert sev.escalation == escalation
    assert sev.business_impact == impact


def test_response_windows_get_shorter_as_severity_rises() -> None:
    windows = [s.response_hours for s in (P3, P2, P1, P0)]
    assert all(w is not None for w in windows)
    latest = [w[1] for w in windows if w is not None]
    assert latest == sorted(latest, reverse=True)


# -- threshold tables ------------------------------------------------------------------------


def test_threshold_tables_are_worst_first_and_descending() -> None:
    for table in (LATENCY_FACTOR_THRESHOLDS, ERROR_RATE_THRESHOLDS):
        assert [row.severity for row in table] == [P0, P1, P2, P3]
        bounds = [row.bound for row in table]
        assert bounds == sorted(bounds, reverse=True)


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        (0.0, OK),
        (0.5, OK),
        (1.0, OK),
        (1.0000001, P3),
        (1.01, P3),
        (1.49, P3),
        (1.4999999, P3),
        (1.5, P2),
        (2.0, P2),
        (2.99, P2),
        (2.9999999, P2),
        (3.0, P1),
        (5.0, P1),
        (9.99, P1),
        (10.0, P1),
        (10.0000001, P0),
        (10.01, P0),
        (1000.0, P0),
    ],
)
def test_severity_for_factor_boundaries(factor: float, expected: Severity) -> None:
    assert severity_for_factor(factor) is expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (0.0, OK),
        (0.005, OK),
        (0.0099, OK),
        (0.01, P3),
        (0.0499, P3),
        (0.05, P2),
        (0.0999, P2),
        (0.1, P1),
        (0.4999, P1),
        (0.5, P0),
        (0.75, P0),
        (1.0, P0),
    ],
)
def test_severity_for_error_rate_boundaries(rate: float, expected: Severity) -> None:
    assert severity_for_error_rate(rate) is expected


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf, -math.inf])
def test_severity_for_error_rate_rejects_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="error rate"):
        severity_for_error_rate(bad)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_severity_for_factor_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="degradation factor"):
        severity_for_factor(bad)


def test_degradation_factor() -> None:
    assert degradation_factor(5400, 500) == pytest.approx(10.8)
    assert degradation_factor(0, 500) == 0.0
    assert degradation_factor(250, 500) == 0.5
    with pytest.raises(ValueError, match="greater than 0"):
        degradation_factor(100, 0)
    with pytest.raises(ValueError, match="greater than 0"):
        degradation_factor(100, -5)
    with pytest.raises(ValueError, match="negative"):
        degradation_factor(-1, 100)


# -- classify: latency -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p95_ms", "expected"),
    [
        (0.0, OK),
        (250.0, OK),
        (500.0, OK),  # 1.0×
        (505.0, P3),  # 1.01×
        (749.0, P3),
        (750.0, P2),  # 1.5×
        (1495.0, P2),  # 2.99×
        (1500.0, P1),  # 3.0×
        (5000.0, P1),  # exactly 10×
        (5005.0, P0),  # 10.01×
        (5400.0, P0),
    ],
)
def test_classify_latency_boundaries(p95_ms: float, expected: Severity) -> None:
    verdict = classify(p95_ms=p95_ms, target_ms=500.0)
    assert verdict.severity is expected
    assert verdict.degradation_factor == pytest.approx(p95_ms / 500.0)
    latency = _reason(verdict, "latency")
    assert latency.severity is expected
    assert latency.value == pytest.approx(p95_ms / 500.0)


def test_classify_latency_message_has_the_numbers() -> None:
    verdict = classify(p95_ms=5400, target_ms=500)
    latency = _reason(verdict, "latency")
    assert latency.message == "p95 latency 5400 ms is 10.8× the 500 ms target (> 10×: P0)"
    assert latency.threshold == 10.0


def test_classify_message_never_rounds_onto_a_boundary() -> None:
    # 10.001× must not be shown as "10×" next to "> 10×: P0".
    message = _reason(classify(p95_ms=5000.5, target_ms=500), "latency").message
    assert "10.001×" in message
    assert "P0" in message


def test_classify_baseline_reference_wording() -> None:
    verdict = classify(p95_ms=900, target_ms=300, reference="baseline")
    assert verdict.severity is P1
    assert "the 300 ms baseline" in _reason(verdict, "latency").message


def test_classify_ok_latency_reason_is_present() -> None:
    verdict = classify(p95_ms=120, target_ms=500)
    assert verdict.severity is OK
    latency = _reason(verdict, "latency")
    assert latency.severity is OK
    assert "120 ms" in latency.message and "500 ms" in latency.message


# -- classify: errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (0.0, OK),
        (0.0099, OK),
        (0.01, P3),
        (0.05, P2),
        (0.1, P1),
        (0.5, P0),
        (1.0, P0),
    ],
)
def test_classify_error_rate_boundaries(rate: float, expected: Severity) -> None:
    verdict = classify(p95_ms=100, target_ms=500, error_rate=rate)
    assert verdict.severity is expected
    assert verdict.error_rate == rate
    errors = _reason(verdict, "errors")
    assert errors.severity is expected
    assert errors.value == rate


def test_error_rate_message() -> None:
    errors = _reason(classify(p95_ms=100, target_ms=500, error_rate=0.12), "errors")
    assert errors.message == "error rate 12% (≥ 10%: P1)"
    assert errors.threshold == 0.1
    p0 = _reason(classify(p95_ms=100, target_ms=500, error_rate=0.62), "errors")
    assert "62%" in p0.message and "unavailable" in p0.message and "P0" in p0.message
    ok = _reason(classify(p95_ms=100, target_ms=500, error_rate=0.0099), "errors")
    assert "0.99%" in ok.message and "OK" in ok.message


def test_no_errors_reason_without_error_rate() -> None:
    verdict = classify(p95_ms=100, target_ms=500)
    assert verdict.error_rate is None
    assert "errors" not in {r.signal for r in verdict.reasons}


# -- classify: availability and missing data -------------------------------------------------


def test_unavailable_is_p0_with_given_reason() -> None:
    verdict = classify(
        p95_ms=None, target_ms=500, available=False, unavailable_reason="connection refused"
    )
    assert verdict.severity is P0
    assert verdict.available is False
    first = verdict.reasons[0]
    assert first.signal == "availability"
    assert first.severity is P0
    assert "connection refused" in first.message


def test_unavailable_without_reason_has_default_text() -> None:
    verdict = classify(p95_ms=100, target_ms=500, error_rate=0.0, available=False)
    assert verdict.severity is P0
    availability = _reason(verdict, "availability")
    assert availability.severity is P0
    assert "unavailable" in availability.message
    # The other signals are still reported, and they were fine.
    assert _reason(verdict, "latency").severity is OK
    assert _reason(verdict, "errors").severity is OK


def test_available_service_has_ok_availability_reason() -> None:
    verdict = classify(p95_ms=100, target_ms=500)
    assert verdict.available is True
    assert _reason(verdict, "availability").severity is OK


def test_no_latency_data_does_not_raise_severity() -> None:
    verdict = classify(p95_ms=None, target_ms=500)
    assert verdict.severity is OK
    assert verdict.degradation_factor is None
    no_data = _reason(verdict, "no_data")
    assert no_data.severity is OK
    assert "latency" not in {r.signal for r in verdict.reasons}


def test_latency_without_target_is_no_data() -> None:
    verdict = classify(p95_ms=99999, target_ms=None, error_rate=0.06)
    assert verdict.severity is P2  # from errors only
    assert verdict.degradation_factor is None
    no_data = _reason(verdict, "no_data")
    assert no_data.severity is OK
    assert "99999 ms" in no_data.message


def test_no_data_at_all() -> None:
    verdict = classify(p95_ms=None, target_ms=None)
    assert verdict.severity is OK
    assert {r.signal for r in verdict.reasons} == {"availability", "no_data"}


# -- classify: combination -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p95_ms", "rate", "available", "expected", "worst_signal"),
    [
        (5400, 0.02, True, P0, "latency"),
        (600, 0.2, True, P1, "errors"),
        (1600, 0.06, True, P1, "latency"),
        (800, 0.0, True, P2, "latency"),
        (100, 0.011, True, P3, "errors"),
        (100, 0.0, False, P0, "availability"),
        (100, 0.9, True, P0, "errors"),
    ],
)
def test_worst_signal_wins(
    p95_ms: float, rate: float, available: bool, expected: Severity, worst_signal: str
) -> None:
    verdict = classify(p95_ms=p95_ms, target_ms=500, error_rate=rate, available=available)
    assert verdict.severity is expected
    assert verdict.reasons[0].signal == worst_signal
    assert verdict.reasons[0].severity is expected


def test_every_signal_has_a_reason_worst_first() -> None:
    verdict = classify(p95_ms=800, target_ms=500, error_rate=0.2)
    assert [r.signal for r in verdict.reasons] == ["errors", "latency", "availability"]
    assert [r.severity for r in verdict.reasons] == [P1, P2, OK]
    for reason in verdict.reasons:
        assert reason.message
        assert "\n" not in reason.message


def test_as_dict_is_json_serialisable() -> None:
    verdict = classify(p95_ms=5400, target_ms=500, error_rate=0.2)
    data = verdict.as_dict()
    restored = json.loads(json.dumps(data))
    assert restored["severity"] == "P0"
    assert restored["degradation_factor"] == pytest.approx(10.8)
    assert restored["error_rate"] == 0.2
    assert restored["available"] is True
    assert restored["label"] == "P0 critical emergency"
    assert [r["signal"] for r in restored["reasons"]] == ["latency", "errors", "availability"]
    assert [r["severity"] for r in restored["reasons"]] == ["P0", "P1", "OK"]
    assert set(restored["reasons"][0]) == {"signal", "severity", "message", "value", "threshold"}
    assert all(key == key.lower() and " " not in key for key in restored)


def test_as_dict_ok_and_unavailable() -> None:
    ok = json.loads(json.dumps(classify(p95_ms=None, target_ms=None).as_dict()))
    assert ok["severity"] == "OK"
    assert ok["response_time"] is None
    assert ok["degradation_factor"] is None
    down = json.loads(json.dumps(classify(p95_ms=None, target_ms=1, available=False).as_dict()))
    assert down["severity"] == "P0"
    assert down["available"] is False


def test_verdict_and_reason_are_frozen() -> None:
    verdict = classify(p95_ms=100, target_ms=500)
    with pytest.raises(AttributeError):
        verdict.severity = P0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        verdict.reasons[0].message = "x"  # type: ignore[misc]


# -- classify: validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p95_ms": -1.0, "target_ms": 500.0}, "p95 latency must not be negative"),
        ({"p95_ms": math.nan, "target_ms": 500.0}, "p95 latency must be a finite"),
        ({"p95_ms": 100.0, "target_ms": 0.0}, "target must be greater than 0"),
        ({"p95_ms": 100.0, "target_ms": -5.0}, "target must be greater than 0"),
        ({"p95_ms": 100.0, "target_ms": 500.0, "error_rate": -0.1}, "error rate"),
        ({"p95_ms": 100.0, "target_ms": 500.0, "error_rate": 1.5}, "error rate"),
        ({"p95_ms": 100.0, "target_ms": 500.0, "error_rate": math.nan}, "error rate"),
        # invalid input is rejected even when the service is down
        ({"p95_ms": -1.0, "target_ms": 500.0, "available": False}, "negative"),
    ],
)
def test_classify_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        classify(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# -- breach severity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "threshold", "expected"),
    [
        (150, 100, "low"),
        (200, 100, "low"),  # ratio exactly 2
        (201, 100, "medium"),
        (300, 100, "medium"),  # exactly 3
        (301, 100, "high"),
        (500, 100, "high"),  # exactly 5
        (501, 100, "critical"),
        (10_000, 100, "critical"),
        (50, 100, "low"),
    ],
)
def test_breach_severity(duration: float, threshold: float, expected: str) -> None:
    assert breach_severity(duration, threshold) == expected


def test_breach_severity_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        breach_severity(100, 0)
    with pytest.raises(ValueError, match="duration"):
        breach_severity(-1, 100)


# -- properties ------------------------------------------------------------------------------

latencies = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
targets = st.floats(min_value=0.001, max_value=1e5, allow_nan=False, allow_infinity=False)
rates = st.floats(min_value=0, max_value=1, allow_nan=False)
maybe_rates = st.none() | rates


@settings(max_examples=100, deadline=None)
@given(a=latencies, b=latencies, target=targets, rate=maybe_rates, available=st.booleans())
def test_more_latency_is_never_milder(
    a: float, b: float, target: float, rate: float | None, available: bool
) -> None:
    low, high = sorted((a, b))
    kwargs = {"target_ms": target, "error_rate": rate, "available": available}
    v_low = classify(p95_ms=low, **kwargs)  # type: ignore[arg-type]
    v_high = classify(p95_ms=high, **kwargs)  # type: ignore[arg-type]
    assert v_low.severity <= v_high.severity
    assert _reason(v_low, "latency").severity <= _reason(v_high, "latency").severity


@settings(max_examples=100, deadline=None)
@given(a=rates, b=rates, p95=st.none() | latencies, target=targets)
def test_more_errors_is_never_milder(a: float, b: float, p95: float | None, target: float) -> None:
    low, high = sorted((a, b))
    v_low = classify(p95_ms=p95, target_ms=target, error_rate=low)
    v_high = classify(p95_ms=p95, target_ms=target, error_rate=high)
    assert v_low.severity <= v_high.severity
    assert severity_for_error_rate(low) <= severity_for_error_rate(high)


@settings(max_examples=100, deadline=None)
@given(
    p95=st.none() | latencies,
    target=st.none() | targets,
    rate=maybe_rates,
    why=st.none() | st.text(max_size=40),
)
def test_unavailable_is_always_p0(
    p95: float | None, target: float | None, rate: float | None, why: str | None
) -> None:
    verdict = classify(
        p95_ms=p95, target_ms=target, error_rate=rate, available=False, unavailable_reason=why
    )
    assert verdict.severity is P0
    assert verdict.available is False
    assert _reason(verdict, "availability").severity is P0


@settings(max_examples=100, deadline=None)
@given(p95=st.none() | latencies, target=st.none() | targets, rate=maybe_rates)
def test_verdict_invariants(p95: float | None, target: float | None, rate: float | None) -> None:
    verdict = classify(p95_ms=p95, target_ms=target, error_rate=rate)
    severities = [r.severity for r in verdict.reasons]
    assert verdict.severity is max(severities)
    assert severities == sorted(severities, reverse=True)
    signals = [r.signal for r in verdict.reasons]
    assert signals.count("availability") == 1
    assert signals.count("latency") + signals.count("no_data") == 1
    assert signals.count("errors") == (0 if rate is None else 1)
    if p95 is not None and target is not None:
        assert verdict.degradation_factor == p95 / target
        assert _reason(verdict, "latency").severity is severity_for_factor(p95 / target)
    if rate is not None:
        assert _reason(verdict, "errors").severity is severity_for_error_rate(rate)
    json.dumps(verdict.as_dict())


@settings(max_examples=100, deadline=None)
@given(factor=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_factor_matches_the_contract(factor: float) -> None:
    if factor > 10:
        expected = P0
    elif factor >= 3:
        expected = P1
    elif factor >= 1.5:
        expected = P2
    elif factor > 1:
        expected = P3
    else:
        expected = OK
    assert severity_for_factor(factor) is expected


@settings(max_examples=100, deadline=None)
@given(a=st.sampled_from(Severity), b=st.sampled_from(Severity), c=st.sampled_from(Severity))
def test_severity_ordering_is_total(a: Severity, b: Severity, c: Severity) -> None:
    assert sum([a < b, a == b, a > b]) == 1
    assert (a <= b) or (b <= a)
    if a <= b and b <= c:
        assert a <= c
    if a <= b and b <= a:
        assert a is b
    assert max(a, b) in (a, b) and max(a, b) >= a and max(a, b) >= b


def test_all_pairs_of_severities_compare_by_rank() -> None:
    order = [OK, P3, P2, P1, P0]
    for x, y in itertools.product(order, repeat=2):
        assert (x < y) == (order.index(x) < order.index(y))


# -- helpers ---------------------------------------------------------------------------------


def _reason(verdict: Verdict, signal: str) -> Reason:
    matches = [r for r in verdict.reasons if r.signal == signal]
    assert len(matches) == 1, f"expected one {signal!r} reason in {verdict.reasons}"
    return matches[0]


# -- against a baseline: the factor's interval ---------------------------------------------


def test_a_factor_within_the_baselines_spread_is_ok_and_says_so() -> None:
    spread = FactorInterval(low=0.94, high=1.31, confidence=0.99)
    verdict = classify(p95_ms=112, target_ms=100, reference="baseline", factor_interval=spread)
    assert verdict.severity is OK
    message = _reason(verdict, "latency").message
    assert message == (
        "p95 latency 112 ms is 1.12× the 100 ms baseline (99 % CI 0.94-1.31×): "
        "within the baseline's spread (OK)"
    )
    assert verdict.as_dict()["degradation_factor_interval"] == {
        "low": 0.94, "high": 1.31, "confidence": 0.99,
    }  # fmt: skip


def test_without_an_interval_any_factor_above_one_is_p3() -> None:
    # a target is a requirement, not an estimate: unchanged
    assert classify(p95_ms=101, target_ms=100).severity is P3
    assert classify(p95_ms=101, target_ms=100).as_dict()["degradation_factor_interval"] is None


@pytest.mark.parametrize(
    ("p95", "low", "expected"),
    [
        (112, 1.01, P3),  # significant, graded on the factor
        (160, 1.01, P2),  # the interval decides whether, the factor how much
        (160, 1.0, OK),  # an interval reaching 1× is no evidence, whatever the factor
        (400, 1.2, P1),
        (1200, 0.9, OK),
        (1200, 2.0, P0),
    ],
)
def test_significant_factors_are_graded_on_the_factor(
    p95: float, low: float, expected: Severity
) -> None:
    spread = FactorInterval(low=low, high=max(low, p95 / 100 * 1.2), confidence=0.95)
    verdict = classify(p95_ms=p95, target_ms=100, reference="baseline", factor_interval=spread)
    assert verdict.severity is expected
    assert severity_for_factor(p95 / 100, spread) is expected
    message = _reason(verdict, "latency").message
    assert "95 % CI" in message
    assert ("within the baseline's spread" in message) is (expected is OK)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low": 1.2, "high": 1.1, "confidence": 0.95},
        {"low": -0.1, "high": 1.1, "confidence": 0.95},
        {"low": 0.9, "high": math.inf, "confidence": 0.95},
        {"low": 0.9, "high": 1.1, "confidence": 1.0},
        {"low": 0.9, "high": 1.1, "confidence": math.nan},
    ],
)
def test_factor_interval_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FactorInterval(**kwargs)


@settings(max_examples=200)
@given(
    factor=st.floats(min_value=0, max_value=1e4, allow_nan=False),
    low=st.floats(min_value=0, max_value=1e4, allow_nan=False),
    width=st.floats(min_value=0, max_value=1e4, allow_nan=False),
)
def test_an_interval_never_makes_a_factor_worse(factor: float, low: float, width: float) -> None:
    spread = FactorInterval(low=low, high=low + width, confidence=0.99)
    graded = severity_for_factor(factor, spread)
    assert graded <= severity_for_factor(factor)
    assert graded is (severity_for_factor(factor) if low > 1.0 else OK)
