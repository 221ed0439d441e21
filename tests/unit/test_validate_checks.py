"""The validation suite's verdicts and report (validate.checks, validate.report), no server."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.validate.checks import (
    NOT_JUDGED,
    EndpointProbe,
    ErrorCase,
    ResourceLimits,
    evaluate_baseline,
    evaluate_error_handling,
    evaluate_load,
    evaluate_monitoring,
    evaluate_rate_limiting,
    evaluate_resources,
)
from crisisctl.validate.report import (
    CHECK_NAMES,
    CheckResult,
    Tally,
    build_report,
    percentile,
    success_rate,
)

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


# -- percentile ------------------------------------------------------------------------------
@given(st.lists(finite, min_size=1, max_size=200), st.floats(min_value=0.1, max_value=100.0))
def test_percentile_is_nearest_rank(values: list[float], p: float) -> None:
    result = percentile(values, p)
    assert result in values
    at_or_below = sum(v <= result for v in values)
    assert at_or_below >= math.ceil(p / 100.0 * len(values))
    assert sum(v < result for v in values) < max(1, math.ceil(p / 100.0 * len(values)))


@given(st.lists(finite, min_size=1, max_size=50), st.floats(1.0, 99.0), st.floats(1.0, 99.0))
def test_percentile_is_monotonic(values: list[float], p: float, q: float) -> None:
    low, high = sorted((p, q))
    assert percentile(values, low) <= percentile(values, high)
    assert percentile(values, 100.0) == max(values)


@pytest.mark.parametrize(("values", "p"), [([], 50.0), ([1.0], 0.0), ([1.0], 101.0)])
def test_percentile_rejects_bad_input(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


def test_p95_of_twenty_is_the_nineteenth() -> None:
    assert percentile([float(i) for i in range(1, 21)], 95.0) == 19.0


# -- tally -----------------------------------------------------------------------------------
def tally(statuses: list[int], errors: list[str] | None = None, ms: float = 1.0) -> Tally:
    t = Tally()
    for status in statuses:
        t.response(status, ms)
    for kind in errors or []:
        t.error(kind)
    return t


def test_tally_counts_and_first_429() -> None:
    t = tally([200, 200, 301, 429, 200, 503, 500], ["timeout"])
    assert t.requests == 8 and t.served() == 4 and t.served_before_first_429 == 3
    assert t.server_errors() == 2 and t.server_errors(allow=(503,)) == 1
    ev = t.evidence()
    assert ev["status_counts"] == {"200": 3, "301": 1, "429": 1, "500": 1, "503": 1}
    assert ev["errors"] == {"timeout": 1} and ev["latency_ms"]["p50"] == 1.0


# -- performance baseline --------------------------------------------------------------------
def test_baseline_passes_within_target() -> None:
    t = Tally()
    for ms in range(1, 21):
        t.response(200, float(ms))
    result = evaluate_baseline(t, target_ms=19.0, planned=20)
    assert result.passed, result.summary
    assert (
        result.evidence["latency_ms"]["p95"] == 19.0 and result.evidence["max_allowed_ms"] == 38.0
    )


def test_baseline_fails_on_p95_over_target() -> None:
    t = Tally()
    for ms in range(1, 21):
        t.response(200, float(ms))
    result = evaluate_baseline(t, target_ms=18.0, planned=20)
    assert not result.passed and "p95 19.0 ms exceeds the 18 ms target" in result.summary


def test_baseline_fails_on_one_very_slow_response() -> None:
    # the seeds' second rule: the slowest may take at most twice the target
    t = Tally()
    for _ in range(19):
        t.response(200, 10.0)
    t.response(200, 250.0)
    result = evaluate_baseline(t, target_ms=100.0, planned=20)
    assert not result.passed and "slowest took 250.0 ms" in result.summary


@pytest.mark.parametrize(
    ("statuses", "errors", "text"),
    [([200] * 19 + [500], [], "not every response was 2xx (19×200, 1×500)"),
     ([200] * 19, ["refused"], "1×refused"),
     ([200] * 10, [], "only 10 of 20 requests ended")],
)  # fmt: skip
def test_baseline_fails_on_errors(statuses: list[int], errors: list[str], text: str) -> None:
    result = evaluate_baseline(tally(statuses, errors), target_ms=2000.0, planned=20)
    assert not result.passed and text in result.summary


# -- rate limiting and concurrency -----------------------------------------------------------
def test_rate_limiting_needs_a_429() -> None:
    ok = evaluate_rate_limiting(tally([200] * 5 + [429] * 195), planned=200)
    assert ok.passed and ok.evidence["served_before_first_429"] == 5
    assert ok.evidence["rate_limited"] == 195
    bad = evaluate_rate_limiting(tally([200] * 200), planned=200)
    assert not bad.passed and "no 429 in a burst of 200 requests (200×200)" in bad.summary
    # a 503 is not a rate limit
    assert not evaluate_rate_limiting(tally([200] * 10 + [503] * 190), planned=200).passed


# -- error handling --------------------------------------------------------------------------
def cases(json_status: int | None, unknown: int | None, method: int | None) -> list[ErrorCase]:
    return [
        ErrorCase("malformed_json", "POST", "/api", "4xx", json_status, excluded=NOT_JUDGED),
        ErrorCase("unknown_route", "GET", "/nope", 404, unknown),
        ErrorCase("wrong_method", "DELETE", "/api", 405, method, error=None),
    ]


@pytest.mark.parametrize(
    ("statuses", "passed"),
    [((400, 404, 405), True),
     ((422, 404, 405), True),
     ((415, 404, 405), True),
     ((405, 404, 405), False),   # a 405 means the body never reached a handler
     ((404, 404, 405), False),
     ((401, 404, 405), False),
     ((429, 404, 405), False),
     ((500, 404, 405), False),   # a malformed body must not crash the service
     ((200, 404, 405), False),
     ((400, 200, 405), False),   # an unknown route must be a 404
     ((400, 404, 404), False),   # the seeds expect 405 for a wrong method
     ((400, 404, None), False)],  # no answer at all
)  # fmt: skip
def test_error_handling_rule(statuses: tuple[int | None, ...], passed: bool) -> None:
    result = evaluate_error_handling(cases(*statuses))
    assert result.passed is passed, result.summary
    assert set(result.evidence) == {"malformed_json", "unknown_route", "wrong_method"}


def test_error_handling_summary_names_the_culprit() -> None:
    result = evaluate_error_handling(cases(500, 404, 405))
    assert result.summary == "POST /api got 500 (expected 4xx, not 401/403/404/405/429)."
    assert not evaluate_error_handling([]).passed


def test_malformed_json_without_a_body_route_is_not_applicable_not_passed() -> None:
    note = "no route of the suite accepts a body (OPTIONS /a allowed GET, HEAD)"
    tried = cases(None, 404, 405)[1:]
    left_out = ErrorCase("malformed_json", "POST", "/a", "4xx", excluded=NOT_JUDGED,
                         applicable=False, note=note)  # fmt: skip
    result = evaluate_error_handling([left_out, *tried])
    assert result.passed
    assert result.summary == (
        f"unknown route → 404, wrong method → 405; malformed json: not applicable ({note})."
    )
    malformed = result.evidence["malformed_json"]
    assert malformed["applicable"] is False and malformed["ok"] is None
    assert malformed["note"] == note
    # nothing applicable: nothing was tried, which is not a pass
    assert not evaluate_error_handling([left_out]).passed


# -- monitoring ------------------------------------------------------------------------------
def test_monitoring_needs_health_or_status() -> None:
    probes = [
        EndpointProbe("health", "/_crisis/health", 404),
        EndpointProbe("health", "/health", 200, 1.0, 2),
        EndpointProbe("status", "/_crisis/status", 404),
        EndpointProbe("metrics", "/metrics", 200, 1.0, 10, prometheus=False),
    ]
    result = evaluate_monitoring(probes)
    assert result.passed and result.evidence["health_path"] == "/health"
    # a 200 that is not Prometheus text is not a metrics endpoint
    assert result.evidence["metrics_path"] is None and "no Prometheus metrics" in result.summary
    down = evaluate_monitoring([EndpointProbe("health", "/health", 503)])
    assert not down.passed and "tried /health" in down.summary
    unreachable = evaluate_monitoring([EndpointProbe("health", "/health", None, error="reset")])
    assert not unreachable.passed


# -- load resilience -------------------------------------------------------------------------
def load_result(counts: dict[str, int], errors: dict[str, int], dropped: int = 0) -> dict[str, Any]:
    return {
        "target_rate": 50.0,
        "duration_s": 10.0,
        "requests": sum(counts.values()) + sum(errors.values()),
        "dropped": dropped,
        "status_counts": counts,
        "errors": {"refused": 0, "timeout": 0, **errors},
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.5},
    }


@pytest.mark.parametrize(
    ("counts", "errors", "dropped", "passed"),
    [({"200": 500}, {}, 0, True),
     ({"200": 475, "302": 0, "503": 25}, {}, 0, True),   # exactly 95 %
     ({"200": 474, "503": 26}, {}, 0, False),
     ({"200": 470, "429": 30}, {}, 0, False),            # 429 is not served
     ({"200": 480}, {"timeout": 20}, 0, True),
     ({"200": 480}, {}, 30, False),                      # dropped slots count as failures
     ({}, {}, 0, False)],
)  # fmt: skip
def test_load_rule(
    counts: dict[str, int], errors: dict[str, int], dropped: int, passed: bool
) -> None:
    result = evaluate_load(load_result(counts, errors, dropped))
    assert result.passed is passed, result.summary


def test_load_failure_says_what_came_back() -> None:
    result = evaluate_load(load_result({"200": 400, "503": 100}, {"timeout": 5}))
    assert "400 of 505 requests served (79.2 %)" in result.summary
    assert "100×503" in result.summary and "5×timeout" in result.summary
    assert result.evidence["errors"] == {"timeout": 5}


# -- resources -------------------------------------------------------------------------------
def snapshot(
    cpu: Any = 20.0, mem: Any = 30.0, rss: Any = 100.0, host_cpu: Any = 50.0
) -> dict[str, Any]:
    return {
        "window_s": 2.0,
        "cpu_count": 2,
        "cpu_percent": host_cpu,
        "memory": {"percent": mem, "available_mb": 1000.0},
        "load_avg": [0.5, 0.5, 0.5],
        "process": {
            "pid": 42,
            "name": "python",
            "cpu_percent": cpu,
            "rss_mb": rss,
            "rss_peak_mb": rss,
        },
        "findings": [],
    }


@pytest.mark.parametrize(
    ("cpu", "mem", "rss", "passed", "text"),
    [(90.0, 90.0, 2048.0, True, "CPU 90.0 % of one core"),  # the seeds' limits are inclusive
     (90.1, 30.0, 100.0, False, "pid 42 (python) used 90.1 % CPU (> 90 % of one core)"),
     (20.0, 95.0, 100.0, False, "host memory 95.0 % used (> 90 %)"),
     (20.0, 30.0, 2049.0, False, "peaked at 2049 MB RSS (> 2048 MB)"),
     ("unavailable: access denied", 30.0, 100.0, True, "CPU unknown, RSS 100.0 MB")],
)  # fmt: skip
def test_resource_rule(cpu: Any, mem: Any, rss: Any, passed: bool, text: str) -> None:
    result = evaluate_resources(snapshot(cpu, mem, rss), ResourceLimits(), "load_resilience")
    assert result.passed is passed and text in result.summary
    assert result.status == ("passed" if passed else "failed")
    assert result.evidence["limits"] == {
        "max_cpu_percent": 90.0,
        "max_memory_percent": 90.0,
        "max_rss_mb": 2048.0,
    }


def test_a_busy_host_does_not_fail_the_service() -> None:
    # the load generator and the rest of the host may keep every core busy: the verdict is the
    # service's process, the host's CPU only context
    result = evaluate_resources(snapshot(cpu=12.0, host_cpu=100.0), ResourceLimits(), "load")
    assert result.passed and "host CPU" not in result.summary
    assert result.evidence["system_cpu_percent"] == 100.0


@pytest.mark.parametrize(
    ("process", "text"),
    [(None, "no process listening on port 8000 could be seen"),
     ("unavailable: access denied (run as the process owner or root)",
      "the service's process could not be read (unavailable: access denied"),
     ({"pid": 7, "name": "x", "cpu_percent": "unavailable: gone", "rss_mb": None},
      "pid 7 gave neither its CPU nor its memory")],
)  # fmt: skip
def test_no_process_evidence_is_skipped_with_the_reason(process: Any, text: str) -> None:
    snap = snapshot(cpu=99.0)
    snap["process"] = process
    result = evaluate_resources(
        snap, ResourceLimits(), "idle (1 s)", "no process listening on port 8000 could be seen"
    )
    assert result.skipped and not result.passed and result.status == "skipped"
    assert text in result.summary
    # skipped is neither a pass nor a failure in the report
    report = build_report(
        url="u", version="0", started_at="t", duration_ms=0.0,
        checks=[result, CheckResult("monitoring", True, "")], required_rate=90.0, settings={},
    )  # fmt: skip
    assert (report["checks_passed"], report["checks_failed"], report["checks_skipped"]) == (1, 0, 1)
    assert report["success_rate"] == 100.0 and report["passed"] is True
    assert report["checks"][0]["status"] == "skipped"


# -- the report ------------------------------------------------------------------------------
outcomes = st.lists(st.sampled_from(["passed", "failed", "skipped"]), min_size=1, max_size=7)


@given(outcomes, st.floats(min_value=0.0, max_value=100.0))
def test_success_rate_counts_only_run_checks(states: list[str], required: float) -> None:
    checks = [
        CheckResult.skip(f"c{i}", "skipped")
        if s == "skipped"
        else CheckResult(f"c{i}", s == "passed", "")
        for i, s in enumerate(states)
    ]
    report = build_report(
        url="http://127.0.0.1:1/", version="0", started_at="2026-01-01T00:00:00+00:00",
        duration_ms=1.0, checks=checks, required_rate=required, settings={},
    )  # fmt: skip
    passed, failed = states.count("passed"), states.count("failed")
    assert report["checks_passed"] == passed and report["checks_failed"] == failed
    assert report["checks_skipped"] == states.count("skipped")
    if passed + failed == 0:
        assert report["success_rate"] is None and report["passed"] is False
    else:
        rate = passed / (passed + failed) * 100.0
        assert report["success_rate"] == round(rate, 2)
        assert report["passed"] is (rate >= required)


def test_seeds_threshold_six_of_seven_is_not_enough() -> None:
    checks = [CheckResult(name, name != "rate_limiting", "") for name in CHECK_NAMES]
    assert success_rate(checks) == pytest.approx(85.714, abs=1e-3)
    report = build_report(
        url="u", version="0", started_at="t", duration_ms=0.0, checks=checks,
        required_rate=90.0, settings={},
    )  # fmt: skip
    assert report["report"] == "validate" and report["passed"] is False
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert set(report["checks"][0]) == {
        "name", "status", "passed", "skipped", "summary", "evidence", "duration_ms",
    }  # fmt: skip
    assert [c["status"] for c in report["checks"]].count("failed") == 1
