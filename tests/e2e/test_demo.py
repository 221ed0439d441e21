"""End to end: `crisisctl demo --quick` takes the sick scanning service through a whole crisis.

One run (~40 s) on 127.0.0.1; the assertions read the JSON artefacts it leaves: the verdicts
before (P0/P1) and after (OK/P3), the improvement, the validation, the incident's lifecycle in
its SQLite database, and the post-mortem's sections.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ARTEFACTS = ("triage-before.json", "before.json", "triage-after.json", "after.json",
             "compare.json", "validate.json", "summary.json", "postmortem.md",
             "postmortem.html", "postmortem.json", "incidents.db")  # fmt: skip
SECTIONS = ("## Summary", "## Impact", "## Detection", "## Response and recovery",
            "## Timeline", "## Root causes", "## Resolution steps", "## Validation results",
            "## Lessons learned", "## Prevention measures", "## Action items")  # fmt: skip


def crisisctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crisisctl.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, float]:
    out = tmp_path_factory.mktemp("demo") / "crisis-demo"
    started = time.monotonic()
    proc = crisisctl("demo", "--quick", "--out", str(out), "--json", timeout=180.0)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout[-3000:]
    return json.loads(proc.stdout), out, elapsed


def read(out: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / name).read_text())
    return data


def test_the_demo_leaves_every_artefact_within_its_bound(
    demo: tuple[dict[str, Any], Path, float],
) -> None:
    summary, out, elapsed = demo
    for name in ARTEFACTS:
        assert (out / name).stat().st_size > 0, name
    assert read(out, "summary.json") == summary
    assert summary["passed"] is True and all(summary["expectations"].values())
    assert summary["profile"] == "quick" and elapsed < 180.0
    assert summary["service"]["url"].startswith("http://127.0.0.1:")


def test_verdicts_before_and_after(demo: tuple[dict[str, Any], Path, float]) -> None:
    summary, out, _ = demo
    before, after = read(out, "triage-before.json"), read(out, "triage-after.json")
    assert before["severity"] in ("P0", "P1")
    if before["available"]:
        assert before["degradation_factor"] >= 3.0  # latency alone makes it P1 or worse
        assert any("target" in r["message"] for r in before["reasons"])
    else:
        # on a loaded host the sick service can hang past the probe's timeout: P0, unavailable
        assert before["severity"] == "P0" and before["degradation_factor"] is None
        assert before["errors"].get("timeout", 0) > 0
    assert before["host"]["process"]["pid"] == summary["service"]["sick_pid"]
    assert after["severity"] in ("OK", "P3")
    assert after["guard"]["present"] is True
    assert summary["triage_before"]["severity"] == before["severity"]


def test_the_fix_is_measured_and_validated(demo: tuple[dict[str, Any], Path, float]) -> None:
    summary, out, _ = demo
    before, after = read(out, "before.json"), read(out, "after.json")
    assert before["report"] == after["report"] == "load"
    assert after["latency_ms"]["p95"] < before["latency_ms"]["p95"] / 10
    assert after["error_rate"] == 0.0
    rows = {r["figure"]: r for r in read(out, "compare.json")["rows"] if r["operation"] is None}
    assert rows["p95"]["improvement_pct"] > 90.0
    assert summary["improvement_pct"]["p95"] == rows["p95"]["improvement_pct"]
    validation = read(out, "validate.json")
    assert validation["passed"] is True
    assert {c["name"] for c in validation["checks"] if c["passed"]} == {
        "monitoring", "error_handling", "performance_baseline", "load_resilience",
        "resource_utilization", "rate_limiting", "concurrency_control",
    }  # fmt: skip
    errors = {c["name"]: c for c in validation["checks"]}["error_handling"]["evidence"]
    assert errors["malformed_json"]["status"] in (400, 422)
    crowd = summary["crowd"]
    assert crowd["after"]["polls_per_s"] < crowd["before"]["polls_per_s"]
    assert summary["service_stats_at_restart"]["stored_result_mb"] > 0
    # the 2-scan cap is the guard's operation quota, shown refusing an excess scan
    quota = [step for step in summary["steps"] if step["step"] == "scan_quota"]
    assert len(quota) == 1 and "refused an excess scan" in quota[0]["message"]
    assert "202, 202, 429" in quota[0]["message"]


def test_the_incident_lifecycle_in_its_database(demo: tuple[dict[str, Any], Path, float]) -> None:
    summary, out, _ = demo
    incident = summary["incident"]
    assert incident["statuses"] == [
        "detected", "investigating", "stabilizing", "mitigated", "resolved",
    ]  # fmt: skip
    with sqlite3.connect(out / "incidents.db") as db:
        status, severity = db.execute(
            "SELECT status, severity FROM incidents WHERE id = ?", (incident["id"],)
        ).fetchone()
        rows = db.execute(
            "SELECT kind FROM incident_events WHERE incident_id = ?", (incident["id"],)
        )
        kinds = {row[0] for row in rows}
        actions = dict(db.execute(
            "SELECT kind, count(*) FROM action_items WHERE incident_id = ? GROUP BY kind",
            (incident["id"],)).fetchall())  # fmt: skip
    assert status == "resolved" and severity == summary["triage_before"]["severity"]
    assert {"triage", "load_report", "action", "guard_mode", "validation"} <= kinds
    assert set(actions) == {"mitigate", "prevent", "process"}
    mttx = incident["mttx_ms"]
    assert 0 < mttx["time_to_detect"] <= mttx["time_to_mitigate"] <= mttx["time_to_resolve"]


def test_the_postmortem_sections(demo: tuple[dict[str, Any], Path, float]) -> None:
    _, out, _ = demo
    text = (out / "postmortem.md").read_text()
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "Before and after (load reports" in text and "chosen by label" in text
    for category in ("Resource Management", "API Protection", "Frontend Optimization",
                     "Memory Management"):  # fmt: skip
        assert f"**{category}**" in text
    document = read(out, "postmortem.json")
    assert document["incident"]["status"] == "resolved"
    assert len(document["root_causes"]) == 4 and document["action_items"]
    assert document["impact"]["before_after"]["chosen_by"] == "label"
    html = (out / "postmortem.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html


def test_demo_bad_input_exits_2(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    proc = crisisctl("demo", "--out", str(afile))
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # Rich wraps long lines
    assert "is a file: give a folder" in message and "Traceback" not in message
    # a database that cannot work is refused before any service starts
    proc = crisisctl("demo", "--out", str(tmp_path / "out"), "--db", "mysql://db/x")
    assert proc.returncode == 2
    assert "unsupported database 'mysql'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_errors_are_one_sentence_and_exit_non_zero() -> None:
    proc = crisisctl("guard", "status", "http://127.0.0.1:1", timeout=30.0)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "could not reach" in proc.stderr
    proc = crisisctl("guard", "mode", "http://127.0.0.1:1", "panic", "--token", "x", timeout=30.0)
    assert proc.returncode == 2
    assert "unknown mode" in proc.stderr
