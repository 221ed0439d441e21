"""Session-wide checks: never test a stale compiled request path.

The guard's request-path modules are compiled in place by ``hatch_build.py`` (``make test``
rebuilds them when a source changes). An extension older than its source would silently be
tested instead of the edited code, so the run stops with what to do.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CRISISCTL_PURE_PYTHON", "").strip() not in ("", "0"):
        return  # the extensions are not used
    spec = importlib.util.spec_from_file_location("crisisctl_hatch_build", ROOT / "hatch_build.py")
    if spec is None or spec.loader is None:
        return
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    stale = build.stale_extensions()
    if stale:
        pytest.exit(
            f"the compiled request path is older than {', '.join(stale)}: run `make test` "
            "(it recompiles), `.venv/bin/python hatch_build.py`, or set CRISISCTL_PURE_PYTHON=1",
            returncode=2,
        )
