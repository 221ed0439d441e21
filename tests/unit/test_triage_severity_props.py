"""Monotonicity of the triage verdict: a worse signal never yields a milder severity.

test_severity.py checks latency and errors one at a time; here every signal worsens at once
(classify), and the triage's own aggregation over operations (worst operation wins) is checked
through `_report` with real `OperationStats`.
"""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.probe.http import ProbeResult
from crisisctl.probe.plan import plan_triage
from crisisctl.probe.sampling import Operation, OperationStats
from crisisctl.probe.verdict import build_report
from crisisctl.severity import Severity, classify

latency = st.floats(min_value=0, max_value=1e6, allow_nan=False)
rate = st.floats(min_value=0, max_value=1, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    p_a=latency,
    p_b=latency,
    e_a=rate,
    e_b=rate,
    up_a=st.booleans(),
    up_b=st.booleans(),
    target=st.floats(min_value=0.01, max_value=1e4),
)
def test_worse_on_every_signal_is_never_milder(
    p_a: float, p_b: float, e_a: float, e_b: float, up_a: bool, up_b: bool, target: float
) -> None:
    better = classify(
        p95_ms=min(p_a, p_b), target_ms=target, error_rate=min(e_a, e_b), available=up_a or up_b
    )
    worse = classify(
        p95_ms=max(p_a, p_b), target_ms=target, error_rate=max(e_a, e_b), available=up_a and up_b
    )
    assert better.severity <= worse.severity


def _operation(name: str, latencies_ms: list[float], failures: int) -> OperationStats:
    stats = OperationStats(Operation("GET", name), planned=len(latencies_ms) + failures)
    for ms in latencies_ms:
        stats.add(ProbeResult(f"GET {name}", status=200, total_ms=ms))
    for _ in range(failures):
        stats.add(ProbeResult(f"GET {name}", status=500, total_ms=1.0))
    return stats


def _severity(ops: list[tuple[list[float], int]]) -> Severity:
    plan = plan_triage(
        "http://127.0.0.1:9/", paths=[f"/op{i}" for i in range(len(ops))], target_ms=100.0
    )
    stats = [_operation(f"/op{i}", lat, fails) for i, (lat, fails) in enumerate(ops)]
    health: dict[str, Any] = {"ok": True, "status": 200, "path": "/health"}
    guard: dict[str, Any] = {"present": False}
    report = build_report(plan, "t", time.monotonic(), health, guard, stats, {"collected": False})
    return Severity.parse(report["severity"])


operation = st.tuples(
    st.lists(st.floats(min_value=0.1, max_value=5000, allow_nan=False), min_size=1, max_size=25),
    st.integers(min_value=0, max_value=25),
)


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(operation, min_size=1, max_size=4),
    extra_ms=st.floats(0, 5000),
    extra_failures=st.integers(0, 10),
    which=st.integers(0, 3),
)
def test_slowing_or_failing_one_operation_never_lowers_the_verdict(
    ops: list[tuple[list[float], int]], extra_ms: float, extra_failures: int, which: int
) -> None:
    before = _severity(ops)
    index = which % len(ops)
    latencies, failures = ops[index]
    worse = list(ops)
    worse[index] = ([ms + extra_ms for ms in latencies], failures)
    assert _severity(worse) >= before
    worse_errors = list(ops)
    worse_errors[index] = (latencies, failures + extra_failures)
    assert _severity(worse_errors) >= before
