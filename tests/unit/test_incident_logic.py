"""Pure incident logic: lifecycle rules, MTTx arithmetic, value parsing, report summaries,
before/after improvement and database URL resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.incidents.db import StoreError, resolve_db_url
from crisisctl.incidents.lifecycle import (
    ACTIVE_STATUSES,
    Status,
    allowed_next,
    check_transition,
    format_duration,
    milestones_reached,
    mttx,
    parse_incident_severity,
    parse_status,
)
from crisisctl.incidents.reports import MAX_SERIES_POINTS, compare_load, summarise_report
from crisisctl.severity import Severity

T0 = datetime(2025, 11, 23, 10, 0, tzinfo=UTC)


@given(st.lists(st.sampled_from(list(Status)), max_size=30))
def test_walks_only_follow_allowed_transitions(steps: list[Status]) -> None:
    current = Status.DETECTED
    for target in steps:
        if target in allowed_next(current):
            check_transition(current, target)
            current = target
        else:
            with pytest.raises(StoreError):
                check_transition(current, target)
    # nothing ever returns to detected, and closed is final
    assert Status.DETECTED not in {s for c in Status for s in allowed_next(c)}
    assert allowed_next(Status.CLOSED) == ()


def test_lifecycle_shape() -> None:
    for status in ACTIVE_STATUSES:
        assert Status.RESOLVED in allowed_next(status)
        assert Status.CLOSED not in allowed_next(status)
    assert allowed_next(Status.RESOLVED) == (Status.INVESTIGATING, Status.POSTMORTEM, Status.CLOSED)
    assert allowed_next(Status.POSTMORTEM) == (Status.CLOSED,)
    assert milestones_reached(Status.RESOLVED) == ["acknowledged_at", "mitigated_at", "resolved_at"]
    assert milestones_reached(Status.INVESTIGATING) == ["acknowledged_at"]
    assert milestones_reached(Status.DETECTED) == []


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_mttx_definitions(detect: int, ack: int, mitigate: int, resolve: int) -> None:
    started = T0
    detected = started + timedelta(seconds=detect)
    acknowledged = detected + timedelta(seconds=ack)
    mitigated = started + timedelta(seconds=mitigate)
    resolved = started + timedelta(seconds=resolve)
    got = mttx(started, detected, acknowledged, mitigated, resolved)
    assert got["time_to_detect"] == timedelta(seconds=detect)
    assert got["time_to_acknowledge"] == timedelta(seconds=ack)
    assert got["time_to_mitigate"] == timedelta(seconds=mitigate)
    assert got["time_to_resolve"] == timedelta(seconds=resolve)
    assert mttx(started, detected, None, None, None)["time_to_resolve"] is None


def test_parsing_values() -> None:
    assert parse_status(" Mitigated ") is Status.MITIGATED
    with pytest.raises(StoreError, match="unknown status 'fixed'"):
        parse_status("fixed")
    assert parse_incident_severity("p0") is Severity.P0
    with pytest.raises(StoreError, match="not OK"):
        parse_incident_severity("ok")
    with pytest.raises(StoreError, match="use P0, P1, P2 or P3"):
        parse_incident_severity("P9")
    assert format_duration(timedelta(seconds=5400)) == "1 h 30 min 00 s"
    assert format_duration(timedelta(seconds=450)) == "7 min 30 s"
    assert format_duration(timedelta(seconds=2.5)) == "2.5 s"
    assert format_duration(None) == "not recorded"


def _load(p95: float, rps: float, errors: int = 0, requests: int = 1000) -> dict[str, object]:
    return {
        "report": "load",
        "requests": requests,
        "requests_per_second": rps,
        "error_total": errors,
        "status_counts": {"200": requests - errors},
        "latency_ms": {"p50": p95 / 4, "p95": p95, "p99": p95 * 2},
    }


def test_summaries_of_each_report_kind() -> None:
    kind, text, details = summarise_report(_load(200.0, 50.0, errors=20), label="after")
    assert kind == "load_report" and details["error_rate"] == pytest.approx(0.02)
    assert text.startswith("load report (after): p50 50.0 ms, p95 200 ms")
    triage = {
        "report": "triage", "url": "http://127.0.0.1:8000/", "severity": "P1",
        "degradation_factor": 4.2, "available": True, "error_rate": 0.03,
        "latency_ms": {"p50": 400.0, "p95": 840.0, "p99": 990.0, "max": 1200.0}, "samples": 20,
        "reasons": [{"message": "p95 latency 840 ms is 4.2× the 200 ms target (≥ 3×: P1)"}],
    }  # fmt: skip
    kind, text, details = summarise_report(triage)
    assert kind == "triage" and details["reasons"][0].startswith("p95 latency 840 ms")
    assert (
        text == "triage of http://127.0.0.1:8000/: P1 — p95 840 ms, 4.2× the reference, errors 3 %"
    )
    validate = {
        "report": "validate", "passed": False, "success_rate": 80.0, "required_rate": 90.0,
        "checks": [{"name": "rate_limiting", "passed": False}, {"name": "errors", "passed": True},
                   {"name": "resources", "passed": False, "skipped": True}],
    }  # fmt: skip
    kind, text, _ = summarise_report(validate)
    assert kind == "validation"
    assert text == (
        "validation: FAILED, 1/2 checks passed (success rate 80 %, required 90 %); "
        "failed: rate_limiting"
    )
    with pytest.raises(StoreError, match="only applies to load reports"):
        summarise_report(validate, label="before")
    with pytest.raises(StoreError, match="says it is 'diagnose'"):
        summarise_report({"report": "diagnose"})
    with pytest.raises(StoreError, match="no latency_ms"):
        summarise_report({"report": "load"})


def test_series_is_bounded() -> None:
    report = _load(10.0, 100.0)
    report["per_second"] = [
        {"second": i, "requests": 10, "errors": 0, "p95_ms": float(i)} for i in range(3600)
    ]
    _, _, details = summarise_report(report)
    assert len(details["series"]) <= MAX_SERIES_POINTS
    assert details["series"][-1]["p95_ms"] == 3599.0  # the worst second of a bucket is kept


@given(st.floats(1.0, 1e5), st.floats(1.0, 1e5), st.floats(1.0, 1e5), st.floats(1.0, 1e5))
def test_improvement_arithmetic(
    before_p95: float, after_p95: float, b_rps: float, a_rps: float
) -> None:
    changes = {c.metric: c for c in compare_load(
        summarise_report(_load(before_p95, b_rps))[2], summarise_report(_load(after_p95, a_rps))[2]
    )}  # fmt: skip
    p95 = changes["p95_ms"]
    assert p95.improvement == pytest.approx((before_p95 - after_p95) / before_p95)
    assert p95.ratio == pytest.approx(before_p95 / after_p95)
    rps = changes["requests_per_second"]
    assert rps.ratio == pytest.approx(a_rps / b_rps)
    assert changes["error_rate"].improvement is None  # 0 errors before: no defined improvement


def test_db_url_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CRISISCTL_DB", raising=False)
    assert resolve_db_url() == f"sqlite:///{tmp_path / 'data' / 'crisisctl' / 'crisisctl.db'}"
    assert (tmp_path / "data" / "crisisctl").is_dir()
    monkeypatch.setenv("CRISISCTL_DB", "postgresql://u@127.0.0.1:5432/x")
    assert resolve_db_url() == "postgresql+psycopg://u@127.0.0.1:5432/x"
    assert resolve_db_url(str(tmp_path / "f.db")) == f"sqlite:///{tmp_path / 'f.db'}"
    assert resolve_db_url("postgres://u:pw@h/x") == "postgresql+psycopg://u:pw@h/x"
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        resolve_db_url("mysql://h/x")
    with pytest.raises(StoreError, match="in-memory SQLite"):
        resolve_db_url("sqlite://")
