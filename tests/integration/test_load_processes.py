"""`--processes N`: engine processes that split the load and whose figures merge exactly."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_load_scenario_runs import SEEN, AppServer, invoke, reset, scenario_file

from crisisctl.load.processes import LiveStats, default_processes, run_scenario
from crisisctl.load.scenario import load_scenario
from crisisctl.load.thresholds import parse_threshold


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    with AppServer() as srv:
        yield srv


OPEN = """\
model: {type: open, rate: 150, duration: 2s, connections: 8}
operations:
  - {name: hello, path: /, weight: 2}
  - {name: client, path: "/api/clients/{id}", weight: 1, expect_status: 401}
variables: {id: {range: [1, 9]}}
"""


def test_two_processes_split_the_rate_and_merge_exactly(server: AppServer, tmp_path: Path) -> None:
    reset()
    out = tmp_path / "two.json"
    result = invoke("load", scenario_file(tmp_path, server, OPEN), "--processes", 2, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["processes"] == 2
    # both halves of 150 req/s for 2 s, every request seen by the server
    assert abs(report["requests"] - 300) <= 4
    assert report["requests"] == report["completed"] == SEEN["requests"]
    ops = report["operations"]
    assert ops["hello"]["requests"] + ops["client"]["requests"] == report["requests"]
    assert ops["client"]["status_counts"] == {"401": ops["client"]["requests"]}
    assert report["unexpected_status"] == 0
    assert report["latency_ms"]["count"] == report["completed"]
    # the series is rebuilt from both processes' ticks
    assert sum(p["requests"] for p in report["per_second"]) == report["requests"]
    assert len(report["per_second"]) >= 2 and report["per_second"][1]["requests"] >= 140
    assert report["connections"] == 8 and report["target_rate"] == pytest.approx(150)


def test_closed_model_users_are_split_and_each_logs_in(server: AppServer, tmp_path: Path) -> None:
    reset()
    text = """\
login: {path: /login, json: {user: alice, password: secret}}
model: {type: closed, users: 3, duration: 1s, think: 20ms}
operations: [{path: "/api/clients/{id}", variables: {id: {list: [1]}}}]
thresholds: [{expr: error_rate < 1%, abort_on_fail: true}]
"""
    scenario, _ = load_scenario(scenario_file(tmp_path, server, text))
    updates: list[LiveStats] = []
    started = time.monotonic()
    outcome = run_scenario(
        scenario, tmp_path, processes=2, thresholds=scenario.all_thresholds(),
        on_update=updates.append,
    )  # fmt: skip
    result = outcome.result
    assert result.processes == 2 and result.users == 3 and SEEN["logins"] == 3
    assert SEEN["unauthorized"] == 0 and result.status_counts == {200: result.requests}
    assert outcome.aborted_by is None and result.aborted is None
    assert updates and updates[-1].total.requests == result.requests
    assert time.monotonic() - started < 30


def test_abort_stops_every_process(server: AppServer, tmp_path: Path) -> None:
    text = """\
model: {type: open, rate: 100, duration: 30s}
operations: [{path: /fail}]
"""
    scenario, _ = load_scenario(scenario_file(tmp_path, server, text))
    threshold = parse_threshold("error_rate < 5%", abort_on_fail=True, delay_abort_eval_s=1.0)
    started = time.monotonic()
    outcome = run_scenario(scenario, tmp_path, processes=2, thresholds=[threshold])
    assert time.monotonic() - started < 20  # 30 s planned
    assert outcome.aborted_by is threshold
    assert outcome.result.aborted == "threshold 'error_rate < 5%' failed"
    assert outcome.result.requests < 1500


def test_default_processes_leave_a_core() -> None:
    assert default_processes() == max(1, (os.cpu_count() or 1) - 1)
