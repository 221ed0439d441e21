"""`crisisctl load` end to end (Typer's CliRunner) against the raw server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_load_engine import RawServer, free_port
from typer.testing import CliRunner

from crisisctl.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    srv = RawServer().start()
    yield srv
    srv.stop()


def test_load_json_open_model(server: RawServer, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["load", f"{server.url}/", "--rate", "100", "--duration", "1s", "--json", "--out", out]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "open" and data["requests"] == 100
    assert data["status_counts"] == {"200": 100}
    assert data["latency_ms"]["p99"] > 0
    assert json.loads(out.read_text()) == data


def test_load_human_closed_model(server: RawServer) -> None:
    args = ["load", f"{server.url}/", "--users", "3", "--duration", "500ms", "--think", "10ms"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "closed model" in result.stdout and "p99" in result.stdout


def test_load_refuses_what_is_not_an_http_url() -> None:
    result = runner.invoke(app, ["load", "ftp://127.0.0.1/", "--rate", "10", "--duration", "1"])
    assert result.exit_code == 2
    assert "https://" in result.stderr and "Traceback" not in result.output
    # one sentence (Rich may wrap it at the terminal width)
    assert result.stderr.count("error:") == 1 and result.stderr.strip().endswith(".")


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "10", "--users", "2"],
        [],
        ["--rate", "10", "--duration", "soon"],
        ["--rate", "-5"],
    ],
)
def test_load_bad_usage_exits_2(args: list[str]) -> None:
    result = runner.invoke(app, ["load", "http://127.0.0.1:9/", "--duration", "1s", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error:")


def test_load_unreachable_exits_3() -> None:
    args = ["load", f"http://127.0.0.1:{free_port()}/", "--rate", "20", "--duration", "300ms"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "could not be reached" in result.stderr


@pytest.mark.parametrize("model", [["--rate", "500"], ["--users", "4"]])
def test_max_requests_bounds_a_run_exactly(server: RawServer, model: list[str]) -> None:
    args = ["load", f"{server.url}/", *model, "--duration", "3s", "--max-requests", "137", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 137 and data["completed"] == 137
    assert data["aborted"] == "stopped at the --max-requests bound (137 requests)"
    assert "sending to" not in result.output  # loopback: no preflight line


def test_max_requests_split_over_processes_is_exact(server: RawServer) -> None:
    args = ["load", f"{server.url}/", "--users", "4", "--duration", "3s", "--max-requests", "101"]
    result = runner.invoke(app, [*args, "--processes", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requests"] == 101
