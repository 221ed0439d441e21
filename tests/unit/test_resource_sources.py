"""Resource evidence says where it came from: psutil on this machine, or the guard's own
process figures from its status (a service whose process cannot be seen from here)."""

from __future__ import annotations

from typing import Any

from crisisctl.probe.guard import GUARD_SOURCE, process_evidence, summarize_status
from crisisctl.probe.plan import plan_triage
from crisisctl.probe.triage import attribute_process
from crisisctl.validate.checks import evaluate_resources
from crisisctl.validate.options import ResourceLimits


def status(uptime_s: float, cpu_s: float, rss_mb: float, age_s: float = 0.2) -> dict[str, Any]:
    return {
        "service": "crisisctl-guard",
        "uptime_s": uptime_s,
        "process": {
            "pid": 4242, "rss_bytes": int(rss_mb * 1_048_576), "rss_mb": rss_mb,
            "cpu_user_s": cpu_s * 0.75, "cpu_system_s": cpu_s * 0.25,
            "cpu_percent_recent": 7.5, "threads": 5, "open_fds": 17,
            "loop_lag_ms": {"recent_max": 3.0, "recent_p99": 1.0, "ticks": 100},
            "gc": {"counts": [1, 2, 3], "collections": [10, 2, 1]}, "sample_age_s": age_s,
        },
    }  # fmt: skip


def test_guard_cpu_between_two_statuses_is_the_share_of_one_core() -> None:
    evidence = process_evidence(status(30.2, 14.0, 120.0), status(10.2, 4.0, 150.0))
    assert evidence is not None
    assert evidence["source"] == GUARD_SOURCE
    assert evidence["cpu_percent"] == 50.0  # 10 s of CPU over 20 s
    assert "20.0 s apart" in evidence["cpu_basis"]
    assert evidence["rss_mb"] == 120.0 and evidence["rss_peak_mb"] == 150.0
    assert evidence["threads"] == 5 and evidence["fds"] == 17


def test_one_status_gives_the_guards_recent_cpu_and_none_without_figures() -> None:
    evidence = process_evidence(status(30.0, 14.0, 120.0))
    assert evidence is not None and evidence["cpu_percent"] == 7.5
    assert process_evidence({"service": "crisisctl-guard", "uptime_s": 3.0}) is None
    assert summarize_status(status(30.0, 1.0, 50.0))["process"]["source"] == GUARD_SOURCE


def host_snapshot(process: Any) -> dict[str, Any]:
    return {"memory": {"percent": 40.0}, "process": process, "cpu_percent": 90.0}


def test_the_resource_check_judges_the_guard_figures_without_a_local_process() -> None:
    guard = process_evidence(status(30.2, 14.0, 120.0), status(10.2, 4.0, 150.0))
    result = evaluate_resources(
        host_snapshot(None), ResourceLimits(max_cpu_percent=40.0), "load", "no pid", guard
    )
    assert result.passed is False
    assert result.evidence["source"] == "guard status"
    assert "50.0 % CPU" in result.summary and "from guard status" in result.summary
    passed = evaluate_resources(host_snapshot(None), ResourceLimits(), "load", "no pid", guard)
    assert passed.passed and passed.evidence["process"]["loop_lag_ms"]["recent_max"] == 3.0


def test_a_local_process_is_preferred_and_named() -> None:
    local = {"pid": 99, "name": "uvicorn", "cpu_percent": 3.0, "rss_mb": 80.0, "threads": 2}
    guard = process_evidence(status(30.0, 14.0, 120.0))
    result = evaluate_resources(host_snapshot(local), ResourceLimits(), "load", "", guard)
    assert result.evidence["source"] == "local process (psutil pid 99)"
    assert result.evidence["process"]["pid"] == 99
    skipped = evaluate_resources(host_snapshot(None), ResourceLimits(), "load", "no pid here")
    assert skipped.status == "skipped" and skipped.evidence["source"] is None


def test_triage_takes_the_guard_figures_when_no_local_process_was_read() -> None:
    plan = plan_triage("http://127.0.0.1:8000/")
    guard = {"present": True, **summarize_status(status(30.0, 14.0, 120.0))}
    host: dict[str, Any] = {"collected": True, "process": None}
    attribute_process(host, None, guard, plan)
    assert host["process_source"] == "guard status" and host["process"]["rss_mb"] == 120.0
    local: dict[str, Any] = {"collected": True, "process": {"pid": 7, "rss_mb": 1.0}}
    attribute_process(local, 7, guard, plan)
    assert local["process_source"] == "local process (psutil pid 7)"
    assert local["process"]["rss_mb"] == 1.0
    nothing: dict[str, Any] = {"collected": True, "process": None}
    attribute_process(nothing, None, {"present": False}, plan)
    assert nothing["process_source"] is None and "pass --pid" in nothing["process_note"]
