"""`crisisctl watch` (a real process) against real guarded uvicorn apps on loopback.

The test changes the app's latency (slow requests) and errors (POST /toggle?fail=1, then
traffic to /flaky) at run time and stops a server; watch must report each.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from guard_servers import GuardServer, guard_servers

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "crisisctl.cli.main", "watch"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env["COLUMNS"] = "200"
    env["WATCH_TEST_TOKEN"] = "read-token"
    return env


def _write(
    tmp_path: Path, server: GuardServer, extra_rules: str = "", interval: str = "1s"
) -> Path:
    path = tmp_path / "watch.yaml"
    path.write_text(
        f"""\
interval: {interval}
state_dir: {tmp_path / "state"}
services:
  api:
    guards: ["{server.url}"]
    probes: [{{url: "{server.url}/health", timeout: 2s}}]
rules:
  - {{name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 100}}
  - name: errors
    kind: threshold
    metric: guard_errors_total
    ratio_to: guard_requests_total
    window: 30s
    above: 0.05
{extra_rules}"""
    )
    return path


def _once(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [*CLI, str(path), "--once", "--json", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _rules(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {alert["rule"]: alert for alert in report["firing"]}


@pytest.fixture
def server() -> Iterator[GuardServer]:
    with guard_servers({}) as (one,):
        yield one


def test_once_reports_latency_errors_and_a_dead_target(server: GuardServer, tmp_path: Path) -> None:
    path = _write(tmp_path, server)
    for _ in range(20):
        httpx.get(f"{server.url}/ok")
    code, report = _once(path)
    assert (code, report["firing"]) == (0, [])

    for _ in range(4):
        httpx.get(f"{server.url}/slow", params={"s": "0.35"})
    code, report = _once(path)
    assert "slow" in _rules(report), report
    slow = _rules(report)["slow"]
    assert code == 1 and slow["severity"] == "P1"  # 350 ms ÷ 100 ms > 3: "high"
    assert slow["labels"]["instance"] == f"127.0.0.1:{server.port}"

    httpx.post(f"{server.url}/toggle", params={"fail": "1"})
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                client.get(f"{server.url}/flaky")
                time.sleep(0.01)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        code, report = _once(path, "--gap", "1.5")
    finally:
        stop.set()
        worker.join(timeout=5)
    errors = _rules(report)["errors"]
    assert code == 1 and errors["value"] > 0.9 and errors["severity"] == "P0"  # 100 % ÷ 5 %

    server.stop()
    code, report = _once(path, "--gap", "0")
    down = {a["labels"]["target"] for a in report["firing"] if a["rule"] == "target_down"}
    assert code == 1 and down == {"guard", "probe"}


def test_an_invalid_file_is_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("interval: 5s\nrules:\n  - {name: x, kind: threshold, metric: m}\n")
    proc = subprocess.run(
        [*CLI, str(path), "--once"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    one_line = " ".join(proc.stderr.split())  # the console wraps long lines
    assert f"{path}:3: rules[0]: give exactly one of above or below" in one_line
    assert "Traceback" not in proc.stderr


def _transitions(proc: subprocess.Popen[str], until: float, wanted: int) -> list[dict[str, Any]]:
    """The JSON lines `proc` prints until `wanted` came or `until` (monotonic) passed."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    rows: list[dict[str, Any]] = []
    while len(rows) < wanted and (left := until - time.monotonic()) > 0:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=left)
            if line.strip():
                rows.append(json.loads(line))
    return rows


def test_the_long_running_watch_detects_stops_cleanly_and_remembers(
    server: GuardServer, tmp_path: Path
) -> None:
    path = _write(tmp_path, server, interval="1s")
    for _ in range(4):
        httpx.get(f"{server.url}/slow", params={"s": "0.35"})

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, str(path), "--dry-run"],
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    proc = start()
    started = time.monotonic()
    try:
        rows = _transitions(proc, started + 15, 1)
        time.sleep(1.0)  # the cycle's alerts are written after the responder ran
    finally:
        proc.kill()  # no chance to save on the way out: the alerts were saved when they fired
        proc.communicate(timeout=15)
    assert [(r["alert"]["rule"], r["alert"]["state"]) for r in rows] == [("slow", "firing")]
    state = json.loads((tmp_path / "state" / "watch-alerts.json").read_text())
    assert [a["rule"] for a in state["engine"]["alerts"]] == ["slow"]

    proc = start()  # restarted: the alert is still firing, so no new transition
    try:
        rows = _transitions(proc, time.monotonic() + 4, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert rows == [] and proc.returncode == 0, err  # SIGTERM: a clean stop
    assert "Traceback" not in err and "1 alert(s) restored" in err
    from crisisctl.watch.store_file import unpack

    saved, _ = unpack((tmp_path / "state" / "watch-state.bin").read_bytes())  # the series
    assert len(saved) > 10 and {s.key.name for s in saved} >= {"guard_latency_p95_ms", "up"}


def test_a_dns_name_with_several_records_is_several_instances(server: GuardServer) -> None:
    import asyncio

    from crisisctl.watch.config import parse_watch_text
    from crisisctl.watch.scrape import Scraper

    config = parse_watch_text(
        f'services:\n  api:\n    guards: ["http://api.watch.test:{server.port}"]\n'
        "    discover: dns\n",
        "w.yaml",
    )

    async def two_records(host: str, port: int) -> list[str]:
        assert (host, port) == ("api.watch.test", server.port)
        return ["127.0.0.1", "127.0.0.2"]  # the second: nothing listens there

    scraper = Scraper(config, resolver=two_records)
    samples = asyncio.run(scraper.scrape())
    up = {k.label("instance"): v for k, v in samples if k.name == "up"}
    assert up == {f"127.0.0.1:{server.port}": 1.0, f"127.0.0.2:{server.port}": 0.0}
    pins = [g.resolve for g in scraper.discovered["api"]]
    assert pins == [
        (f"api.watch.test:{server.port}:127.0.0.1",),
        (f"api.watch.test:{server.port}:127.0.0.2",),
    ]


def test_prometheus_endpoints_probes_and_the_host(server: GuardServer) -> None:
    import asyncio

    from crisisctl.watch.config import parse_watch_text
    from crisisctl.watch.scrape import Scraper

    httpx.get(f"{server.url}/ok")
    config = parse_watch_text(
        f'services:\n  api:\n    metrics: ["{server.url}/_crisis/metrics"]\n'
        f'    probes: [{{url: "{server.url}/ok", expect_status: 201}}]\n    host: true\n',
        "w.yaml",
    )
    samples = asyncio.run(Scraper(config).scrape())
    names = {k.name for k, _ in samples}
    assert "crisisctl_http_requests_total" in names  # the exposition's own names
    assert {"host_cpu_percent", "host_memory_percent", "host_disk_percent"} <= names
    got = {k.name: v for k, v in samples if k.name.startswith("probe_")}
    assert got["probe_success"] == 0.0 and got["probe_status"] == 200.0  # 200 is not 201
    assert {k.label("target") for k, v in samples if k.name == "up" and v == 1.0} == {
        "metrics",
        "probe",
        "host",
    }
