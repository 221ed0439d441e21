"""Triage planning, health selection, availability, baselines profiles and next steps (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.cli.triage import exit_code
from crisisctl.probe.http import ProbeResult
from crisisctl.probe.plan import DEFAULT_TARGET_MS, HEALTH_PATHS, BaselineRef, plan_triage
from crisisctl.probe.profile import (
    ProfileError,
    baseline_p95,
    profile_from_report,
    profile_operations,
    resource_changes,
)
from crisisctl.probe.recommendations import recommendations
from crisisctl.probe.sampling import Operation, OperationStats
from crisisctl.probe.verdict import availability, judge_health
from crisisctl.severity import Severity, classify

URL = "http://127.0.0.1:8000"


def _baseline(expired: bool = False, ops: dict[str, Any] | None = None) -> BaselineRef:
    now = datetime.now(UTC)
    expires = now - timedelta(hours=1) if expired else now + timedelta(hours=23)
    profile = {
        "operations": ops
        or {
            "GET /a": {"method": "GET", "path": "/a", "body": None, "p95": 50.0},
            "POST /b": {"method": "POST", "path": "/b", "body": '{"x": 1}', "p95": 80.0},
        }
    }
    return BaselineRef("prod", profile, now - timedelta(hours=1), expires)


# -- plan -------------------------------------------------------------------------------------


def test_default_plan_probes_the_url_path_against_the_default_target() -> None:
    plan = plan_triage(f"{URL}/api/x")
    assert [op.name for op in plan.operations] == ["GET /api/x"]
    assert plan.target_ms == DEFAULT_TARGET_MS
    assert plan.health_paths == HEALTH_PATHS
    assert any("2000 ms" in w for w in plan.warnings)
    assert plan.timeout_s == pytest.approx(7.5)  # min(budget / 2, max(5 s, 11 × 2 s))
    assert plan.max_requests == 20 + len(HEALTH_PATHS) + 1


def test_paths_method_and_body() -> None:
    plan = plan_triage(
        URL, paths=["/a", "/b", "/a"], method="post", body='{"k": 1}', target_ms=100, samples=5
    )
    assert [op.name for op in plan.operations] == ["POST /a", "POST /b"]
    assert plan.operations[0].body == b'{"k": 1}'
    assert plan.timeout_s == 5.0
    assert plan.warnings == ()


def test_baseline_supplies_operations_and_warns_when_expired() -> None:
    plan = plan_triage(URL, baseline=_baseline(expired=True))
    assert [op.name for op in plan.operations] == ["GET /a", "POST /b"]
    assert plan.operations[1].body == b'{"x": 1}'
    assert plan.target_ms is None
    assert any("expired" in w for w in plan.warnings)
    fresh = plan_triage(URL, baseline=_baseline(), paths=["/a", "/c"])
    assert [op.name for op in fresh.operations] == ["GET /a", "GET /c"]
    assert any("no p95 for GET /c" in w for w in fresh.warnings)
    assert not any("expired" in w for w in fresh.warnings)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"url": "ftp://10.0.0.1/"}, "https://"),
        ({"url": "http:///nohost"}, "no host"),
        ({"samples": 0}, "--samples"),
        ({"samples": 201}, "--samples"),
        ({"concurrency": 17}, "--concurrency"),
        ({"budget_s": 0.5}, "--budget"),
        ({"target_ms": 0}, "--target-ms"),
        ({"target_ms": -3}, "--target-ms"),
        ({"method": "GE T"}, "--method"),
        ({"body": "{nope"}, "--body"),
        ({"paths": ["api"]}, "--path"),
        ({"health_path": "health"}, "--health"),
        ({"pid": 0}, "--pid"),
        ({"timeout_s": 30.0}, "--timeout"),
        ({"paths": [f"/p{i}" for i in range(11)]}, "at most"),
    ],
)
def test_bad_input_is_one_sentence(kwargs: dict[str, Any], needle: str) -> None:
    url = kwargs.pop("url", URL)
    with pytest.raises(ValueError, match=None) as info:
        plan_triage(url, **kwargs)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message and message.endswith(".")


def test_target_and_baseline_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either --target-ms or --baseline"):
        plan_triage(URL, target_ms=100, baseline=_baseline())


@given(st.text(max_size=30))
def test_any_method_text_is_accepted_or_refused_cleanly(method: str) -> None:
    try:
        plan = plan_triage(URL, method=method)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert plan.operations[0].method.isalpha()


# -- health and availability -----------------------------------------------------------------


def _probe(path: str, status: int | None = None, error: str | None = None) -> ProbeResult:
    return ProbeResult(
        operation=f"GET {path}",
        status=status,
        error=error,
        detail=error or "",
        total_ms=1.0 if status else None,
    )


def test_health_picks_the_first_endpoint_that_exists() -> None:
    health = judge_health(
        [_probe("/_crisis/health", 404), _probe("/health", 200), _probe("/api/health", 503)]
    )
    assert (health["path"], health["ok"], health["status"]) == ("/health", True, 200)
    failing = judge_health([_probe("/_crisis/health", 404), _probe("/health", 503)])
    assert (failing["path"], failing["ok"]) == ("/health", False)
    absent = judge_health([_probe("/_crisis/health", 404), _probe("/health", 404)])
    assert absent["ok"] is None
    hung = judge_health(
        [_probe("/_crisis/health", error="timeout"), _probe("/health", error="timeout")]
    )
    assert hung["ok"] is False and hung["error"] == "timeout"


def _stats(answered: int, failed_5xx: int, errors: dict[str, int]) -> OperationStats:
    s = OperationStats(Operation("GET", "/x"), planned=answered + sum(errors.values()))
    for i in range(answered):
        s.add(ProbeResult("GET /x", status=500 if i < failed_5xx else 200, total_ms=5.0))
    for kind, n in errors.items():
        for _ in range(n):
            s.add(ProbeResult("GET /x", error=kind, detail=kind))
    return s


def test_availability() -> None:
    ok_health = {"ok": True, "status": 200, "path": "/health"}
    assert availability(ok_health, [_stats(10, 0, {})]) == (True, None, True)
    down, why, reachable = availability(ok_health, [_stats(0, 0, {"refused": 3, "timeout": 5})])
    assert not down and "hangs" in (why or "") and reachable
    bad_health = {"ok": False, "status": 503, "path": "/health"}
    assert availability(bad_health, [_stats(10, 0, {})])[:2] == (
        False,
        "health check GET /health answered HTTP 503",
    )
    refused = {"ok": False, "status": None, "path": "/health", "error": "refused"}
    assert availability(refused, [_stats(0, 0, {"refused": 4})]) == (
        False,
        "health check GET /health: connection refused",
        False,
    )
    # 5xx answers are errors, not unavailability
    assert availability({"ok": None, "status": None}, [_stats(10, 10, {})])[0] is True


# -- profiles ---------------------------------------------------------------------------------


def _report() -> dict[str, Any]:
    return {
        "url": URL,
        "started_at": "2026-01-01T00:00:00Z",
        "error_rate": 0.0,
        "latency_ms": {"p95": 12.0},
        "sampling": {"per_operation": 20},
        "operations": [
            {
                "operation": "GET /a",
                "method": "GET",
                "path": "/a",
                "body": None,
                "error_rate": 0.0,
                "latency_ms": {"count": 20, "p50": 5.0, "p95": 12.0, "p99": 15.0, "max": 16.0},
            },
            {"operation": "GET /dead", "method": "GET", "path": "/dead", "latency_ms": None},
        ],
        "host": {
            "cpu_percent": 20.0,
            "load_avg": [0.5, 0.4, 0.3],
            "memory": {"percent": 40.0},
            "process": {"rss_mb": 80.0, "cpu_percent": 3.0, "threads": 4},
        },
    }


def test_profile_round_trip() -> None:
    profile = profile_from_report(_report())
    assert list(profile["operations"]) == ["GET /a"]
    assert baseline_p95(profile, "GET /a") == 12.0
    assert baseline_p95(profile, "GET /dead") is None
    assert profile_operations(profile) == [("GET", "/a", None)]
    assert profile["resources"]["process_rss_mb"] == 80.0
    assert profile["resources"]["load_avg_1m"] == 0.5
    changes = resource_changes(profile, {"process": {"rss_mb": 500.0, "threads": 40}})
    assert "process RSS 500MB now vs 80MB in the baseline" in changes
    assert "process threads 40 now vs 4 in the baseline" in changes


def test_profile_errors() -> None:
    report = _report()
    report["operations"] = report["operations"][1:]
    with pytest.raises(ProfileError, match="no operation answered"):
        profile_from_report(report)
    with pytest.raises(ProfileError, match="no usable operations"):
        profile_operations({"operations": {"GET /a": {"p95": 1}}})


# -- recommendations and exit codes ----------------------------------------------------------


def test_p0_with_a_guard_recommends_emergency_mode() -> None:
    verdict = classify(p95_ms=5000, target_ms=100, error_rate=0.0)
    steps = recommendations(
        verdict, url=URL, guard={"present": True, "mode": "normal"}, host=None, errors={}
    )
    assert steps[0].startswith("Open a P0 incident")
    assert any(f"crisisctl guard mode {URL} emergency" in s for s in steps)
    already = recommendations(
        verdict,
        url=URL,
        host=None,
        errors={},
        guard={"present": True, "mode": "emergency", "mode_since": "t"},
    )
    assert any("already in emergency mode" in s for s in already)
    unguarded = recommendations(verdict, url=URL, guard={"present": False}, host=None, errors={})
    assert any("crisisctl.guard.Guard" in s for s in unguarded)


def test_unavailable_and_error_steps() -> None:
    verdict = classify(p95_ms=None, target_ms=100, error_rate=1.0, available=False)
    steps = recommendations(
        verdict, url=URL, guard=None, host={"findings": ["CPU 99% busy"]}, errors={"timeout": 4}
    )
    assert steps[0].startswith("The service does not answer")
    assert any("timed out" in s for s in steps)
    assert any("error pattern" in s for s in steps)
    assert "Host: CPU 99% busy." in steps
    assert len(steps) == len(set(steps))


def test_ok_recommends_saving_a_baseline() -> None:
    steps = recommendations(
        classify(p95_ms=10, target_ms=100, error_rate=0.0),
        url=URL,
        guard={"present": False},
        host=None,
        errors={},
    )
    assert any("baseline save" in s for s in steps)
    assert not any("Guard" in s for s in steps)


@pytest.mark.parametrize(
    ("severity", "reachable", "fail_on", "code"),
    [
        ("P1", True, None, 0),
        ("P0", False, None, 0),
        ("P1", True, Severity.P1, 1),
        ("P0", True, Severity.P1, 1),
        ("P2", True, Severity.P1, 0),
        ("OK", True, Severity.P3, 0),
        ("P0", False, Severity.P1, 3),
        ("P0", False, Severity.P0, 3),
    ],
)
def test_exit_codes(severity: str, reachable: bool, fail_on: Severity | None, code: int) -> None:
    assert exit_code({"severity": severity, "reachable": reachable}, fail_on) == code
