"""`crisisctl compare`: ratios and improvements of two load reports, and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from crisisctl.cli.main import app
from crisisctl.load.compare import (
    ReportError,
    compare_reports,
    dropped_pct,
    improvement,
    load_report,
    mismatch_sentence,
    mismatches,
)

runner = CliRunner()


def report(p50: float, p95: float, p99: float, mx: float, err: float, rps: float) -> dict[str, Any]:
    latency = {"p50": p50, "p90": p95, "p95": p95, "p99": p99, "p999": mx, "max": mx}
    return {
        "report": "load",
        "latency_ms": latency,
        "error_rate": err,
        "requests_per_second": rps,
        "operations": {},
    }


def test_the_seeds_98_percent() -> None:
    # 25 minutes -> 30 seconds
    ratio, pct = improvement(25 * 60_000.0, 30_000.0, lower_is_better=True)
    assert ratio == pytest.approx(50.0) and pct == pytest.approx(98.0)


@given(st.floats(min_value=0.001, max_value=1e6), st.floats(min_value=0.001, max_value=1e6))
def test_improvement_properties(before: float, after: float) -> None:
    ratio, pct = improvement(before, after, lower_is_better=True)
    assert ratio == pytest.approx(before / after) and pct == pytest.approx(
        (before - after) / before * 100
    )
    up_ratio, up_pct = improvement(before, after, lower_is_better=False)
    assert up_ratio == pytest.approx(after / before)
    assert up_pct is not None and pct is not None
    assert (up_pct > 0) == (after > before) and (pct > 0) == (after < before)


def test_zero_denominators() -> None:
    assert improvement(0.0, 0.0, True) == (1.0, 0.0)
    assert improvement(2.0, 0.0, True) == (None, 100.0)  # errors gone: no finite ratio
    assert improvement(0.0, 2.0, True) == (0.0, None)
    assert improvement(0.0, 5.0, False) == (None, None)


def test_rows_for_the_run_and_shared_operations() -> None:
    before = report(100, 900, 1500, 3000, 0.05, 200)
    after = report(10, 45, 60, 90, 0.0, 500)
    op = report(50, 500, 800, 900, 0.1, 100)
    before["operations"] = {"get": op, "post": op, "gone": op}
    after["operations"] = {"get": report(5, 25, 40, 50, 0.0, 250), "post": op}
    rows = compare_reports(before, after)
    whole = {r.figure: r for r in rows if r.scope is None}
    assert whole["p95"].ratio == pytest.approx(20.0)
    assert whole["p95"].improvement_pct == pytest.approx(95.0)
    assert whole["error_rate"].before == pytest.approx(5.0) and whole["error_rate"].after == 0
    assert whole["rps"].ratio == pytest.approx(2.5) and whole["rps"].improvement_pct == 150.0
    assert {r.scope for r in rows} == {None, "get", "post"}
    get = {r.figure: r for r in rows if r.scope == "get"}
    assert get["p99"].improvement_pct == pytest.approx(95.0)


def test_a_single_operation_is_not_repeated() -> None:
    before, after = report(1, 2, 3, 4, 0, 10), report(1, 2, 3, 4, 0, 10)
    before["operations"] = {"GET /": before.copy()}
    after["operations"] = {"GET /": after.copy()}
    assert {r.scope for r in compare_reports(before, after)} == {None}


# -- files and the command -------------------------------------------------------------------
def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_cli_table_and_json(tmp_path: Path) -> None:
    before = write(tmp_path / "before.json", report(100, 1500, 2000, 2500, 0.02, 100))
    after = write(tmp_path / "after.json", report(10, 30, 40, 50, 0.0, 400))
    result = runner.invoke(app, ["compare", str(before), str(after)])
    assert result.exit_code == 0, result.output
    assert "p95 latency" in result.stdout and "+98.0 %" in result.stdout
    assert "50.00×" in result.stdout
    result = runner.invoke(app, ["compare", str(before), str(after), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"] == "compare"
    p95 = next(r for r in data["rows"] if r["figure"] == "p95")
    assert p95 == {
        "operation": None, "figure": "p95", "unit": "ms", "before": 1500.0, "after": 30.0,
        "ratio": 50.0, "improvement_pct": 98.0,
    }  # fmt: skip
    err = next(r for r in data["rows"] if r["figure"] == "error_rate")
    assert err["ratio"] is None and err["improvement_pct"] == 100.0
    assert all(math.isfinite(r["before"]) for r in data["rows"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("not json", "is not JSON"),
        ({"report": "validate"}, "is not a crisisctl load report"),
        ([1, 2], "is not a crisisctl load report"),
        ({"report": "load", "latency_ms": {}}, "missing or invalid figures"),
    ],
)
def test_cli_bad_files_exit_2(tmp_path: Path, content: object, message: str) -> None:
    good = write(tmp_path / "good.json", report(1, 2, 3, 4, 0, 5))
    bad = tmp_path / "bad.json"
    if isinstance(content, str):
        bad.write_text(content)
    elif content is not None:
        write(bad, content)
    result = runner.invoke(app, ["compare", str(bad), str(good)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1
    with pytest.raises(ReportError):
        load_report(bad)


# -- runs of different tests and dropped arrivals ----------------------------------------------
def run_report(**fields: Any) -> dict[str, Any]:
    data = report(10, 20, 30, 40, 0.0, 100)
    data.update(
        url="http://127.0.0.1:8000/api", model="open", target_rate=100.0, users=0,
        duration_s=30.0, planned_duration_s=30.0, arrival="constant", requests=3000,
        dropped=0, scheduled=3000, dropped_rate=0.0,
        operations={"GET /api": dict(report(10, 20, 30, 40, 0.0, 100), method="GET")},
    )  # fmt: skip
    data.update(fields)
    return data


def test_runs_of_the_same_test_match() -> None:
    assert mismatches(run_report(), run_report(target_rate=100.0 + 1e-9)) == []
    # a run stopped early is still a run of the same test (its planned duration is the same)
    assert mismatches(run_report(), run_report(duration_s=12.5)) == []


def test_every_difference_is_named() -> None:
    before = run_report()
    after = run_report(
        url="http://127.0.0.1:8001/api", target_rate=200.0, duration_s=60.0,
        planned_duration_s=60.0, arrival="poisson",
        operations={"POST /api": dict(report(1, 2, 3, 4, 0.0, 1), method="POST")},
    )  # fmt: skip
    found = mismatches(before, after)
    assert [m.field for m in found] == ["URL", "method", "rate", "duration", "arrivals"]
    closed = run_report(model="closed", users=10, target_rate=0.0)
    assert [m.field for m in mismatches(before, closed)] == ["model"]
    assert [m.phrase() for m in mismatches(closed, run_report(model="closed", users=20))] == [
        "users (10 vs 20)"
    ]
    sentence = mismatch_sentence(mismatches(run_report(), run_report(
        target_rate=200.0, planned_duration_s=60.0, duration_s=60.0,
    )))  # fmt: skip
    assert sentence == (
        "the runs differ in rate (100/s vs 200/s) and duration (30 s vs 60 s); compare runs "
        "of the same test or pass --allow-mismatch."
    )


def test_cli_refuses_runs_of_different_tests_unless_allowed(tmp_path: Path) -> None:
    before = write(tmp_path / "before.json", run_report())
    after = write(tmp_path / "after.json", run_report(target_rate=200.0, method="x"))
    result = runner.invoke(app, ["compare", str(before), str(after)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert message == (
        "error: the runs differ in rate (100/s vs 200/s); compare runs of the same test or "
        "pass --allow-mismatch."
    )
    allowed = runner.invoke(app, ["compare", str(before), str(after), "--allow-mismatch"])
    assert allowed.exit_code == 0, allowed.output
    assert "compared anyway" in allowed.stdout and "rate (100/s vs 200/s)" in allowed.stdout
    as_json = runner.invoke(app, ["compare", str(before), str(after), "--allow-mismatch", "--json"])
    data = json.loads(as_json.stdout)
    assert data["mismatches"] == [{"field": "rate", "before": "100/s", "after": "200/s"}]


def test_dropped_arrivals_are_compared_and_flagged(tmp_path: Path) -> None:
    before = run_report(requests=2400, dropped=600, scheduled=3000, dropped_rate=0.2)
    after = run_report()
    whole = {r.figure: r for r in compare_reports(before, after) if r.scope is None}
    assert whole["dropped_rate"].before == pytest.approx(20.0) and whole["dropped_rate"].after == 0
    assert whole["dropped_rate"].improvement_pct == 100.0
    # reports written before dropped_rate existed: from dropped and requests
    old = {k: v for k, v in before.items() if k not in ("dropped_rate", "scheduled")}
    assert dropped_pct(old) == pytest.approx(20.0)
    paths = write(tmp_path / "b.json", before), write(tmp_path / "a.json", after)
    result = runner.invoke(app, ["compare", *map(str, paths)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "dropped arrivals" in text and "before: the load generator dropped 20.0% of" in text
    data = json.loads(runner.invoke(app, ["compare", *map(str, paths), "--json"]).stdout)
    assert set(data["dropped_warnings"]) == {"before"}
