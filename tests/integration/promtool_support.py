"""Helpers for the tests that run Debian's promtool and amtool (installed by `make services`
through scripts/ensure-system-packages.sh): a missing tool fails the test, never skips it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def tool(name: str) -> str:
    """The path of `name`, or a loud failure naming the set-up step."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make services` "
            "(scripts/ensure-system-packages.sh prometheus prometheus-alertmanager)"
        )
    return path


def run(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a Prometheus tool in `cwd` (bounded: 120 s)."""
    return subprocess.run(
        [tool(name), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
