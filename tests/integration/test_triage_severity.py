"""Triage against servers whose behaviour is known: each gets DESIGN.md's severity in budget.

Latency routes sleep 1, 2, 5 and 20 × nothing / BASE_MS (100 ms) and are judged against a
100 ms target, so the factors sit in the middle of their bands (OK < 1, P2 1.5-3, P1 3-10,
P0 > 10) with room for a loaded machine's overhead. Error routes fail exactly 3 or 12 of every
20 requests. Raw servers hang, reset mid-response or answer garbage; a free port refuses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from triage_servers import BASE_MS, raw_server, refused_port, sick_server

from crisisctl.probe.plan import plan_triage
from crisisctl.probe.triage import run_triage

#: slack over the budget for scheduling on a loaded machine (the run itself stops before it)
BUDGET_SLACK_S = 1.0


@pytest.fixture(scope="module")
def sick() -> Iterator[str]:
    with sick_server() as url:
        yield url


async def _triage(url: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("target_ms", BASE_MS)
    plan = plan_triage(url, **kwargs)
    started = time.monotonic()
    report = await run_triage(plan)
    wall = time.monotonic() - started
    assert wall <= plan.budget_s + BUDGET_SLACK_S, f"took {wall:.2f} s of {plan.budget_s} s"
    assert report["duration_s"] <= plan.budget_s + BUDGET_SLACK_S
    return report


@pytest.mark.parametrize(
    ("path", "samples", "severity", "low", "high"),
    [
        ("/ok", 20, "OK", 0.0, 1.0),
        ("/x2", 20, "P2", 1.5, 3.0),
        ("/x5", 20, "P1", 3.0, 10.0),
        ("/x20", 4, "P0", 10.0, 40.0),
    ],
)
async def test_latency_degradation(
    sick: str, path: str, samples: int, severity: str, low: float, high: float
) -> None:
    report = await _triage(sick, paths=[path], samples=samples)
    assert report["severity"] == severity, report["reasons"]
    assert low <= report["degradation_factor"] < high
    assert report["available"] is True and report["reachable"] is True
    assert report["error_rate"] == 0.0
    assert report["samples"] == samples
    assert report["reasons"][0]["signal"] == ("latency" if severity != "OK" else "availability")
    assert report["health"]["path"] == "/health" and report["health"]["ok"] is True
    assert report["guard"]["present"] is False


@pytest.mark.parametrize(
    ("path", "rate", "severity"), [("/err15", 0.15, "P1"), ("/err60", 0.6, "P0")]
)
async def test_error_ratios(sick: str, path: str, rate: float, severity: str) -> None:
    report = await _triage(sick, paths=[path], samples=20, concurrency=2)
    assert report["error_rate"] == pytest.approx(rate)
    assert report["severity"] == severity
    assert report["reasons"][0]["signal"] == "errors"
    assert report["status_classes"] == {"2xx": round(20 * (1 - rate)), "5xx": round(20 * rate)}
    assert report["available"] is True


async def test_worst_operation_decides(sick: str) -> None:
    report = await _triage(sick, paths=["/ok", "/err15", "/x5"], samples=20, concurrency=4)
    assert report["severity"] == "P1"
    assert report["worst_operation"] == "GET /x5"
    assert report["worst_error_operation"] == "GET /err15"
    assert report["overall_error_rate"] == pytest.approx(3 / 60)
    assert len(report["operations"]) == 3 and len(report["requests"]) == 60


@pytest.mark.parametrize(
    ("kind", "error", "why"),
    [
        ("hang", "timeout", "hangs"),
        ("reset", "reset", "reset"),
        ("garbage", "bad_response", "not valid HTTP"),
    ],
)
async def test_misbehaving_servers_are_p0_unavailable(kind: str, error: str, why: str) -> None:
    with raw_server(kind) as url:
        report = await _triage(f"{url}/api/x", budget_s=3.0, samples=8)
    assert report["severity"] == "P0"
    assert report["available"] is False and report["reachable"] is False
    assert report["reasons"][0]["signal"] == "availability"
    assert why in report["reasons"][0]["message"]
    assert set(report["errors"]) == {error}
    assert report["latency_ms"]["p95"] is None and report["degradation_factor"] is None
    assert report["recommendations"][0].startswith("The service does not answer")


async def test_refused_connection_is_p0_unavailable() -> None:
    report = await _triage(f"http://127.0.0.1:{refused_port()}/", budget_s=3.0)
    assert report["severity"] == "P0"
    assert "connection refused" in report["reasons"][0]["message"]
    assert report["errors"] == {"refused": 20}
    assert report["host"]["process_note"].startswith("no local process")


async def test_hang_respects_a_small_budget_and_reports_unsent_requests() -> None:
    with raw_server("hang") as url:
        report = await _triage(url, budget_s=2.0, samples=50, concurrency=2)
    # nothing ran past the budget: 2 at a time, each cut off by the deadline
    assert report["sampling"]["sent"] <= 4
    assert report["sampling"]["not_sent"] >= 46
    assert any("budget ran out" in w for w in report["warnings"])
    assert report["limits"]["max_in_flight"] == 2


async def test_phase_timings_and_host_evidence(sick: str) -> None:
    report = await _triage(sick, paths=["/x2"], samples=4)
    row = report["requests"][0]
    assert row["status"] == 200 and row["tls_ms"] is None
    assert 0 <= row["dns_ms"] <= row["first_byte_ms"] <= row["total_ms"]
    assert row["first_byte_ms"] >= 2 * BASE_MS * 0.95  # the server's sleep is before any byte
    host = report["host"]
    assert host["collected"] is True and host["pid_source"] == "listening port"
    port = int(sick.rsplit(":", 1)[1])
    assert port in host["process"]["listening_ports"]
    assert host["process"]["threads"] >= 1


async def test_guard_awareness() -> None:
    with sick_server(guard={"token": "t"}) as url:
        import httpx

        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await client.post(
                f"{url}/_crisis/mode",
                json={"mode": "emergency", "reason": "test"},
                headers={"authorization": "Bearer t"},
            )
            assert answer.status_code == 200
        report = await _triage(url, paths=["/x20"], samples=2)
    guard = report["guard"]
    assert guard["present"] is True and guard["mode"] == "emergency"
    assert guard["limits"]["concurrency_mode"] == "adaptive"
    assert isinstance(guard["shed_total"], int) and isinstance(guard["in_flight"], int)
    assert guard["latency_ms"]["count"] >= 1
    assert report["health"]["path"] == "/_crisis/health"
    assert report["severity"] == "P0"
    assert any("already in emergency mode" in s for s in report["recommendations"])
