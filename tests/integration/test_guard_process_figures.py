"""A guarded uvicorn server reports its own process figures, and triage uses them when it
does not look for the service's process on this machine (what a remote service gets)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from guard_servers import GuardServer, guard_servers
from typer.testing import CliRunner

from crisisctl.cli.main import app


@pytest.fixture(scope="module")
def guarded() -> Iterator[GuardServer]:
    with guard_servers({}) as (server,):
        yield server


def triage(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["triage", *args, "--json", "--budget", "6s"])
    assert result.stdout.strip().startswith("{"), result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_triage_names_where_the_process_figures_came_from(guarded: GuardServer) -> None:
    pid = guarded.proc.pid  # type: ignore[union-attr]
    local = triage(f"{guarded.url}/ok")
    host = local["host"]
    assert isinstance(host, dict)
    assert host["process_source"] == f"local process (psutil pid {pid})"

    remote = triage(f"{guarded.url}/ok", "--no-local-process")
    host = remote["host"]
    assert isinstance(host, dict)
    assert host["process_source"] == "guard status"
    assert host["process"]["pid"] == pid and host["process"]["rss_mb"] > 10
    assert host["pid_source"] is None
    guard = remote["guard"]
    assert isinstance(guard, dict) and guard["process"]["threads"] >= 1
