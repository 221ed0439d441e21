"""`crisisctl validate` end to end (Typer's CliRunner) against real uvicorn servers on 127.0.0.1.

A guarded app passes every check (its static and its adaptive concurrency limit alike); the
same kind of app with no protection fails the rate-limit and concurrency checks (exit 1); an
unreachable port exits 3 at once; a slow service does not keep the suite past its --budget.
The resource check measures the service's own process, so the other work of this shared
machine does not change its verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from guard_servers import GuardServer, guard_servers
from nginx_server import Process, bare_server, free_port, uvicorn_server
from typer.testing import CliRunner

from crisisctl.cli.main import app

runner = CliRunner()
#: the guard under test: a rate-limited route and a small static concurrency limit, no queue
GUARD_CONFIG = {
    "routes": [{"pattern": "/limited", "rate_limit": "20/second"}],
    # one service-wide limit: the evidence shows it as "limit" (in route scope: the ceiling)
    "concurrency": {"mode": "static", "limit": 12, "queue_size": 0, "scope": "service"},
}
#: the guard's adaptive limit (its default mode) with a short queue
ADAPTIVE_CONFIG = {
    "concurrency": {"mode": "adaptive", "limit": 8, "max_limit": 16, "queue_size": 4},
}
#: every check but concurrency control
ONLY_CONCURRENCY = ["--skip", "monitoring,error_handling,performance_baseline,load_resilience,"
                    "resource_utilization,rate_limiting"]  # fmt: skip
QUICK = ["--load-duration", "2s", "--load-rate", "40", "--json"]


def run_validate(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = runner.invoke(app, ["validate", *args])
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result.exit_code, report, result.stderr


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def guarded() -> Iterator[GuardServer]:
    with guard_servers(GUARD_CONFIG) as (server,):
        yield server


@pytest.fixture(scope="module")
def bare() -> Iterator[Process]:
    with bare_server() as server:
        yield server


def test_guarded_app_passes_every_check(guarded: GuardServer) -> None:
    code, report, stderr = run_validate(
        f"{guarded.url}/ok", "--burst-path", "/limited", "--concurrency-path", "/slow?s=0.3",
        "--concurrency", "30", *QUICK,
    )  # fmt: skip
    assert report is not None, stderr
    checks = checks_of(report)
    assert [c["name"] for c in report["checks"] if not c["passed"]] == [], checks
    assert code == 0
    assert report["report"] == "validate" and report["passed"] is True
    assert report["success_rate"] == 100.0 and report["checks_passed"] == 7
    assert report["settings"]["guard_detected"] is True
    assert report["settings"]["target_pid"] == guarded.proc.pid  # type: ignore[union-attr]

    monitoring = checks["monitoring"]["evidence"]
    assert monitoring["health_path"] == "/_crisis/health"
    assert monitoring["metrics_path"] == "/_crisis/metrics"

    rate = checks["rate_limiting"]["evidence"]
    assert rate["rate_limited"] > 0 and rate["status_counts"]["429"] == rate["rate_limited"]
    assert rate["guard"]["rejected_during_burst"]["rate_limited"] == rate["rate_limited"]
    assert rate["guard"]["rate_limits"]

    conc = checks["concurrency_control"]["evidence"]
    assert conc["status_counts"].get("503", 0) > 0 and conc["timeouts"] == 0
    assert conc["guard"]["concurrency"]["limit"] == 12
    # the guard's own reason says why: every 503 was a full service, none came when alone
    assert (
        conc["causes"]
        == {"concurrency": conc["status_counts"]["503"]}
        == {"concurrency": conc["shed"]}
    )
    assert conc["guard"]["rejected_during_burst"]["queue_full"] == conc["status_counts"]["503"]
    assert conc["alone"]["refused"] == 0 and conc["alone"]["requests"] > 3

    load = checks["load_resilience"]["evidence"]
    assert load["success_rate"] >= 95.0 and load["requests"] == 80

    resources = checks["resource_utilization"]["evidence"]
    assert resources["process"]["pid"] == guarded.proc.pid  # type: ignore[union-attr]
    assert resources["sampled_during"] == "load_resilience"
    assert resources["source"] == f"local process (psutil pid {guarded.proc.pid})"  # type: ignore[union-attr]

    # no route of the suite takes a body (OPTIONS lists GET and HEAD): malformed JSON does not
    # apply, and says so, instead of counting /limited's 405 as handled input
    errors = checks["error_handling"]
    malformed = errors["evidence"]["malformed_json"]
    assert malformed["applicable"] is False and malformed["status"] is None
    assert "OPTIONS /limited allowed GET, HEAD" in malformed["note"]
    assert "malformed json: not applicable" in errors["summary"]
    assert errors["evidence"]["unknown_route"]["status"] == 404
    assert errors["evidence"]["wrong_method"]["status"] == 405
    assert all(c["duration_ms"] > 0 for c in report["checks"])


def test_without_a_local_process_the_guard_reports_its_own_figures(guarded: GuardServer) -> None:
    """What a remote or containerised service gets: no psutil lookup here, the resource check
    judges the figures the guard reports in its status, and says so."""
    httpx.get(f"{guarded.url}/ok", timeout=5.0)  # (the first request starts the ticker)
    time.sleep(1.2)
    status = httpx.get(f"{guarded.url}/_crisis/status", timeout=5.0).json()
    process = status["process"]
    assert process["pid"] == guarded.proc.pid  # type: ignore[union-attr]
    assert process["rss_bytes"] > 10 * 1_048_576 and process["threads"] >= 1
    assert process["open_fds"] > 3 and len(process["gc"]["collections"]) == 3
    assert process["loop_lag_ms"]["ticks"] >= 1  # the ticker has run

    code, report, stderr = run_validate(
        f"{guarded.url}/ok", "--no-local-process", "--skip",
        "monitoring,error_handling,performance_baseline,rate_limiting,concurrency_control",
        *QUICK,
    )  # fmt: skip
    assert report is not None, stderr
    assert report["settings"]["target_pid"] is None and code == 0
    resources = checks_of(report)["resource_utilization"]
    assert resources["status"] == "passed", resources
    assert resources["evidence"]["source"] == "guard status"
    assert resources["evidence"]["process"]["pid"] == guarded.proc.pid  # type: ignore[union-attr]
    assert resources["evidence"]["process"]["cpu_percent"] is not None
    assert "between two guard samples" in resources["evidence"]["process"]["cpu_basis"]
    assert "process figures from guard status" in resources["summary"]


def test_without_a_local_process_or_a_guard_the_resource_check_is_skipped(bare: Process) -> None:
    _, report, stderr = run_validate(
        f"{bare.url}/", "--no-local-process", "--skip",
        "monitoring,error_handling,performance_baseline,load_resilience,rate_limiting,"
        "concurrency_control", "--json",
    )  # fmt: skip
    assert report is not None, stderr
    resources = checks_of(report)["resource_utilization"]
    assert resources["status"] == "skipped"
    assert "local process lookup is off" in resources["summary"]


def test_guard_adaptive_limit_passes_concurrency_control() -> None:
    with guard_servers(ADAPTIVE_CONFIG) as (server,):
        code, report, stderr = run_validate(
            f"{server.url}/ok", "--concurrency-path", "/slow?s=0.3", "--concurrency", "40",
            *ONLY_CONCURRENCY, "--json",
        )  # fmt: skip
    assert report is not None, stderr
    conc = checks_of(report)["concurrency_control"]
    assert conc["passed"] is True, conc["summary"]
    ev = conc["evidence"]
    assert ev["guard"]["concurrency"]["mode"] == "adaptive"
    assert ev["shed"] > 0 and set(ev["causes"]) <= {"concurrency"}
    shed = ev["guard"]["rejected_during_burst"]
    assert sum(shed.get(k, 0) for k in ("queue_full", "queue_timeout", "overloaded")) == ev["shed"]
    assert code == 0


def test_unprotected_app_fails_rate_and_concurrency(bare: Process) -> None:
    code, report, stderr = run_validate(
        f"{bare.url}/api/items", "--concurrency-path", "/slow?s=0.1", *QUICK
    )
    assert report is not None, stderr
    assert code == 1
    checks = checks_of(report)
    assert checks["rate_limiting"]["passed"] is False
    assert checks["rate_limiting"]["evidence"]["status_counts"] == {"200": 200}
    assert checks["concurrency_control"]["passed"] is False
    assert checks["concurrency_control"]["evidence"]["shed"] == 0
    for name in ("monitoring", "error_handling", "performance_baseline", "load_resilience"):
        assert checks[name]["passed"] is True, checks[name]
    # a JSON endpoint that OPTIONS says takes POST: the malformed body gets the app's 400
    malformed = checks["error_handling"]["evidence"]["malformed_json"]
    assert malformed["status"] == 400 and malformed["method"] == "POST"
    assert "Allow of OPTIONS /api/items" in malformed["note"]
    # the service's own process, not the host
    resources = checks["resource_utilization"]
    assert resources["status"] == "passed"
    assert resources["evidence"]["process"]["pid"] == bare.proc.pid
    assert "of one core" in resources["summary"]
    assert report["settings"]["guard_detected"] is False
    assert report["passed"] is False and report["success_rate"] < 90.0


def test_human_output_and_skip(bare: Process) -> None:
    result = runner.invoke(
        app,
        ["validate", f"{bare.url}/", "--skip", "load_resilience,resource-utilization",
         "--skip", "concurrency_control", "--required-rate", "75"],
    )  # fmt: skip
    # monitoring, error handling and baseline pass, rate limiting fails: 3 of 4 = 75 %
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "✗ FAIL rate_limiting" in out and "✓ pass monitoring" in out
    assert "- skip load_resilience" in out and "- skip resource_utilization" in out
    assert "3 skipped (not counted): success rate 75.0 %" in out and "VALIDATED" in out


def test_post_burst_on_the_lab_service() -> None:
    # the demo's fixed scanning service: POST /api/scans is rate limited per client by the
    # guard, and a malformed JSON document gets 400
    with uvicorn_server("crisisctl.lab.scanner:fixed_app") as lab:
        code, report, stderr = run_validate(
            f"{lab.url}/health", "--burst-path", "POST /api/scans", "--burst", "50",
            "--skip", "load_resilience,resource_utilization,concurrency_control", "--json",
        )  # fmt: skip
    assert report is not None, stderr
    checks = checks_of(report)
    rate = checks["rate_limiting"]
    assert rate["passed"] and rate["evidence"]["method"] == "POST"
    assert rate["evidence"]["guard"]["rejected_during_burst"]["rate_limited"] > 0
    assert "429" in rate["evidence"]["status_counts"]
    errors = checks["error_handling"]
    assert errors["passed"], errors
    assert 400 <= errors["evidence"]["malformed_json"]["status"] < 500
    assert checks["performance_baseline"]["passed"] and checks["monitoring"]["passed"]
    assert report["success_rate"] == 100.0 and code == 0


def test_unreachable_port_exits_3_quickly() -> None:
    start = time.monotonic()
    code, report, stderr = run_validate(f"http://127.0.0.1:{free_port()}/", "--json")
    assert code == 3 and report is None
    assert "gave no HTTP answer (refused)" in stderr
    assert time.monotonic() - start < 5.0


def test_suite_respects_its_budget(bare: Process) -> None:
    # each baseline request takes 0.5 s: 20 of them cannot fit in an 8 s budget
    budget_s = 8.0
    start = time.monotonic()
    code, report, stderr = run_validate(
        f"{bare.url}/slow?s=0.5", "--budget", f"{budget_s:g}s", "--timeout", "2s",
        "--target-ms", "2000", *QUICK,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert report is not None, stderr
    assert code == 1
    assert elapsed < budget_s + 3.0
    assert report["duration_ms"] < (budget_s + 2.0) * 1000.0
    checks = checks_of(report)
    baseline = checks["performance_baseline"]
    assert baseline["passed"] is False and "ran out of time" in baseline["summary"]
    assert 0 < baseline["evidence"]["requests"] < 20
    for name in ("load_resilience", "resource_utilization", "rate_limiting", "concurrency_control"):
        assert checks[name]["passed"] is False
        assert "budget" in checks[name]["summary"], checks[name]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://127.0.0.1/"], "https://"),
        (["http://127.0.0.1:9/", "--skip", "nonsense"], "unknown check 'nonsense'"),
        (["http://127.0.0.1:9/", "--budget", "10s"], "--budget"),
        (["http://127.0.0.1:9/", "--required-rate", "150"], "--required-rate"),
        (["http://127.0.0.1:9/", "--burst", "0"], "--burst"),
        (["http://127.0.0.1:9/", "--path", "api"], "--path"),
        (["http://127.0.0.1:9/", "--load-duration", "soon"], "not a duration"),
    ],
)
def test_bad_input_exits_2(args: list[str], message: str) -> None:
    code, report, stderr = run_validate(*args)
    assert code == 2 and report is None
    assert message in stderr and "Traceback" not in stderr
    assert stderr.count("error:") == 1 and stderr.strip().endswith(".")
