"""Host evidence (crisisctl.probe.host): real psutil readings of this test process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.probe.host import (
    HostWindow,
    findings,
    host_snapshot,
    is_unavailable,
    pid_listening_on,
    pressure_level,
    unavailable,
)


def test_snapshot_of_this_process_is_json_ready() -> None:
    snap = host_snapshot(os.getpid(), top=3, interval=0.05)
    json.dumps(snap)
    assert snap["cpu_count"] >= 1
    assert 0.0 <= snap["cpu_percent"] <= 100.0
    memory = snap["memory"]
    assert memory["total_mb"] > memory["available_mb"] > 0
    assert memory["pressure"] in ("normal", "high", "critical")
    proc = snap["process"]
    assert proc["pid"] == os.getpid()
    assert proc["rss_mb"] > 1
    assert proc["threads"] >= 1
    assert isinstance(proc["open_files"], int)
    assert isinstance(proc["listening_ports"], list)
    assert 1 <= len(snap["top_cpu"]) <= 3 and 1 <= len(snap["top_memory"]) <= 3
    rss = [p["rss_mb"] for p in snap["top_memory"]]
    assert rss == sorted(rss, reverse=True)
    assert isinstance(snap["findings"], list)


def test_snapshot_without_pid_has_no_process() -> None:
    snap = host_snapshot(top=1, interval=0)
    assert snap["process"] is None
    assert len(snap["top_cpu"]) == 1


def test_missing_process_is_unavailable_not_an_exception() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    snap = host_snapshot(proc.pid, interval=0)  # that pid is gone (and not reused this fast)
    assert is_unavailable(snap["process"])
    assert "no process" in snap["process"] or "exited" in snap["process"]


def test_process_of_another_user_reports_what_is_forbidden() -> None:
    snap = host_snapshot(1, interval=0)
    proc = snap["process"]
    assert isinstance(proc, dict) or is_unavailable(proc)
    if isinstance(proc, dict) and os.geteuid() != 0:
        # whatever could not be read says why instead of raising
        for key in ("open_files", "connections", "listening_ports"):
            value = proc[key]
            assert not isinstance(value, str) or is_unavailable(value)


def test_window_measures_rss_growth_and_cpu() -> None:
    window = HostWindow(os.getpid())
    window.start()
    hog = bytearray(64 * 1024 * 1024)  # touch 64 MB
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    window.sample()
    sum(range(300_000))
    snap = window.finish()
    proc = snap["process"]
    assert proc["rss_growth_mb"] >= 50
    assert proc["rss_peak_mb"] >= proc["rss_start_mb"] + 50
    assert proc["cpu_percent"] > 0
    del hog


def test_pid_listening_on_finds_this_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert pid_listening_on(port) == os.getpid()
        snap = host_snapshot(os.getpid(), interval=0)
        assert port in snap["process"]["listening_ports"]
    assert pid_listening_on(port) is None


def test_unavailable_marker() -> None:
    assert is_unavailable(unavailable("access denied"))
    assert unavailable("x") == "unavailable: x"
    assert not is_unavailable(3) and not is_unavailable("ok")


@pytest.mark.parametrize(
    ("percent", "level"),
    [(10, "normal"), (85, "normal"), (85.1, "high"), (90, "high"), (90.5, "critical")],
)
def test_pressure_levels_follow_the_seeds(percent: float, level: str) -> None:
    assert pressure_level(percent) == level


@given(a=st.floats(0, 100), b=st.floats(0, 100))
def test_pressure_is_monotonic(a: float, b: float) -> None:
    order = ["normal", "high", "critical"]
    low, high = sorted((a, b))
    assert order.index(pressure_level(low)) <= order.index(pressure_level(high))


def test_findings_name_each_threshold() -> None:
    snap = {
        "cpu_percent": 95.0,
        "cpu_count": 2,
        "load_avg": [4.5, 2.0, 1.0],
        "memory": {"percent": 92.0, "available_mb": 300.0, "pressure": "critical"},
        "process": {"pid": 7, "rss_mb": 3000.0, "rss_growth_mb": 150.0, "cpu_percent": 180.0},
    }
    text = " | ".join(findings(snap))
    for needle in (
        "CPU 95%",
        "critical pressure",
        "load average 4.50",
        "3000 MB RSS",
        "grew 150 MB",
        "180% CPU",
    ):
        assert needle in text
    calm = {
        "cpu_percent": 10.0,
        "cpu_count": 2,
        "load_avg": [0.5, 0.5, 0.5],
        "memory": {"percent": 30.0, "available_mb": 9000.0, "pressure": "normal"},
        "process": {"pid": 7, "rss_mb": 100.0, "rss_growth_mb": 1.0, "cpu_percent": 5.0},
    }
    assert findings(calm) == []
