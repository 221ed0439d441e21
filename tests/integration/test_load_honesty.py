"""Open-model runs are honest about what they did not send, split one schedule between
processes, offer Poisson arrivals; `compare` refuses runs of different tests.

Against the uvicorn app of test_load_scenario_runs.py on 127.0.0.1 (`/slow` answers in 20 ms,
`/stamp` notes when each request arrived).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_load_scenario_runs import SEEN, AppServer, invoke, reset

from crisisctl.load.schedule import RateSchedule


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer() as srv:
        yield srv


def flat(text: str) -> str:
    """The words of a command's output: no table borders, single spaces."""
    return " ".join(text.replace("│", " ").split())


def test_a_run_that_cannot_keep_up_reports_its_dropped_arrivals_and_fails(
    server: AppServer, tmp_path: Path
) -> None:
    # one connection to a 20 ms route holds ~50 req/s: three arrivals in four find it busy
    out, html = tmp_path / "dropped.json", tmp_path / "dropped.html"
    result = invoke(
        "load", f"{server.url}/slow", "--rate", 200, "--duration", "1s", "--connections", 1,
        "--processes", 1, "--out", out, "--html", html,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(out.read_text())
    assert report["scheduled"] == 200 == report["requests"] + report["dropped"]
    assert report["dropped"] >= 100 and report["dropped_rate"] >= 0.5
    assert report["error_rate"] == 0.0  # what was sent was answered
    (default,) = report["thresholds"]
    assert default["expression"] == "dropped_rate < 1%" and default["default"]
    assert not default["passed"] and default["value"] == report["dropped_rate"]
    shown = flat(result.stdout)
    assert f"dropped arrivals {report['dropped']} of 200" in shown
    assert "the load generator dropped" in shown and "give more connections" in shown
    assert "thresholds failed: dropped_rate < 1%" in flat(result.stderr)
    assert "banner fail dropped" in html.read_text()
    # the same run with the connections it needs drops nothing and passes
    enough = tmp_path / "enough.json"
    ok = invoke(
        "load", f"{server.url}/slow", "--rate", 200, "--duration", "1s", "--connections", 16,
        "--processes", 1, "--out", enough,
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    clean = json.loads(enough.read_text())
    assert clean["dropped"] == 0 and clean["requests"] == 200
    assert "load generator dropped" not in ok.stdout
    # a user's own dropped_rate threshold replaces the default one
    loose = invoke(
        "load", f"{server.url}/slow", "--rate", 200, "--duration", "1s", "--connections", 1,
        "--processes", 1, "--threshold", "dropped_rate <= 100%", "--json",
    )  # fmt: skip
    assert loose.exit_code == 0, loose.output
    assert [t["expression"] for t in json.loads(loose.stdout)["thresholds"]] == [
        "dropped_rate <= 100%"
    ]
    # before (dropping) and after (enough connections) are runs of the same test
    compared = invoke("compare", out, enough)
    assert compared.exit_code == 0, compared.output
    assert "before: the load generator dropped" in flat(compared.stdout)


def test_compare_refuses_reports_of_different_runs(server: AppServer, tmp_path: Path) -> None:
    reports = []
    for rate, duration in ((50, "1s"), (100, "500ms")):
        path = tmp_path / f"{rate}.json"
        result = invoke(
            "load", f"{server.url}/", "--rate", rate, "--duration", duration, "--processes", 1,
            "--out", path, "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        reports.append(path)
    refused = invoke("compare", *reports)
    assert refused.exit_code == 2, refused.output
    assert flat(refused.stderr) == (
        "error: the runs differ in rate (50/s vs 100/s) and duration (1 s vs 0.5 s); compare "
        "runs of the same test or pass --allow-mismatch."
    )
    allowed = invoke("compare", *reports, "--allow-mismatch")
    assert allowed.exit_code == 0, allowed.output
    assert "compared anyway" in allowed.stdout and "p95 latency" in allowed.stdout


def test_processes_interleave_one_schedule_instead_of_arriving_in_bursts(
    server: AppServer, tmp_path: Path
) -> None:
    reset()
    out = tmp_path / "two.json"
    result = invoke(
        "load", f"{server.url}/stamp", "--rate", 40, "--duration", "2s", "--connections", 4,
        "--processes", 2, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and report["requests"] == 80 == len(SEEN["stamps"])
    assert report["target_rate"] == pytest.approx(40.0)
    stamps = sorted(SEEN["stamps"])
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # one arrival every 25 ms; two copies of a 20/s schedule would send pairs (gaps near 0)
    close = sum(1 for g in gaps if g < 0.006)
    print(
        f"2 processes at 40/s: median gap {statistics.median(gaps) * 1000:.1f} ms, {close} < 6 ms"
    )
    assert close <= len(gaps) // 10
    assert 0.020 < statistics.median(gaps) < 0.030


def test_poisson_arrivals_split_between_processes_are_the_one_seeded_schedule(
    server: AppServer, tmp_path: Path
) -> None:
    expected = len(list(RateSchedule.constant(150.0, 1.0).arrivals("poisson", 11)))
    out = tmp_path / "poisson.json"
    result = invoke(
        "load", f"{server.url}/", "--rate", 150, "--duration", "1s", "--arrival", "poisson",
        "--seed", 11, "--processes", 2, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["arrival"] == "poisson" and report["config"]["scenario"]["seed"] == 11
    assert report["requests"] + report["dropped"] == expected  # exactly the one schedule
    # without a seed one is drawn, and the report keeps it to reproduce the arrivals
    unseeded = invoke(
        "load", f"{server.url}/", "--rate", 50, "--duration", "300ms", "--arrival", "poisson",
        "--processes", 1, "--json",
    )  # fmt: skip
    assert unseeded.exit_code == 0, unseeded.output
    assert isinstance(json.loads(unseeded.stdout)["config"]["scenario"]["seed"], int)
