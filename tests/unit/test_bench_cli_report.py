"""The load-generator benchmark measures `crisisctl load` as a whole process and reads its report.

`benchmarks/loadgen_throughput.py` runs the CLI exactly as a user would (``crisisctl load URL
--users N --duration D --processes 1 --out FILE``) and takes its CPU from `wait4()`, start-up
included; `parse_cli_report` must count what the server answered and keep the process's own
CPU and wall time (not the sending window's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.freeze_server import FreezeModel, FreezeServer
from benchmarks.apps.loadgen_tools import run_pinned
from benchmarks.loadgen_throughput import command, parse_cli_report

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_run_is_counted_as_a_whole_process(tmp_path: Path) -> None:
    server = FreezeServer(FreezeModel(0.001, 0.0, 1.0))  # 1 ms per request, never frozen
    server.start()
    try:
        args = argparse.Namespace(connections=4, duration=1.0, rate=100.0)
        cmd, kind = command("crisisctl_cli", args, f"http://127.0.0.1:{server.port}/", tmp_path)
        assert kind == "cli" and cmd[1:3] == ["load", f"http://127.0.0.1:{server.port}/"]
        done = run_pinned(cmd, 0, 60, {}, cwd=ROOT)
        assert done.returncode == 0, done.output[-1500:]
        out = parse_cli_report(tmp_path / "cli-report.json", done)
    finally:
        server.stop()
    assert out["errors"] == 0
    assert 0 < out["requests"] <= server.served
    assert out["cpu_s"] == done.cpu_s > 0.2  # the interpreter's start-up is counted
    assert out["wall_s"] == done.wall_s > out["sending_s"] >= 1.0
