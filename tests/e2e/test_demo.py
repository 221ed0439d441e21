"""End to end: `crisisctl demo` runs the guard demo on loopback and reports what the guard did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_the_guard_sheds_and_limits(tmp_path: Path) -> None:
    out = tmp_path / "artefacts"
    proc = subprocess.run(
        [sys.executable, "-m", "crisisctl.cli.main", "demo", "--duration", "6", "--out", str(out),
         "--json"],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads((out / "guard-demo.json").read_text())["duration_s"] == 6
    work = result["work"]
    # 3x capacity offered: the guard must have shed a good part of it, fast, not timed out
    shed = work["status_counts"].get("503", 0)
    assert shed > 0
    assert work["ok"] > 0
    assert sum(work["errors"].values()) == 0
    # the rate-limited route answered 429 beyond 5/s
    assert result["scans"]["status_counts"].get("429", 0) > 0
    # emergency mode shed the low-priority route
    assert result["guard"]["shed"].get("emergency", 0) > 0
    modes = [change["mode"] for change in result["guard"]["mode"]["history"]]
    assert modes[:2] == ["emergency", "recovering"]
    assert result["guard"]["concurrency"]["mode"] == "adaptive"


def test_cli_errors_are_one_sentence_and_exit_non_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "crisisctl.cli.main", "guard", "status", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "could not reach" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "crisisctl.cli.main", "guard", "mode", "http://127.0.0.1:1", "panic",
         "--token", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown mode" in proc.stderr
