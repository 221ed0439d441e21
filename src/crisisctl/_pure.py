"""Run-time choice between the compiled request path and its pure-Python source.

The guard's and the load engine's per-request modules are compiled with mypyc when the package
is built (see ``hatch_build.py``); the compiled extension sits next to its ``.py`` source and
Python's import system prefers it. ``CRISISCTL_PURE_PYTHON=1`` makes those modules load from
source instead — for debugging, profiling with Python tools, or comparing the two — by
putting a finder in front of the import system before any of them is imported
(``crisisctl/__init__.py`` calls `install` first thing).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: the modules hatch_build.py compiles (keep in step with its ACCELERATED)
ACCELERATED = frozenset(
    {
        "crisisctl.stats",
        "crisisctl.guard.breaker",
        "crisisctl.guard.concurrency",
        "crisisctl.guard.metrics",
        "crisisctl.guard.middleware",
        "crisisctl.guard.ratelimit",
        "crisisctl.guard.routes",
        "crisisctl.guard.ticker",
        "crisisctl.load.client",
        "crisisctl.load.lanes",
        "crisisctl.load.recorder",
        "crisisctl.load.recording",
        "crisisctl.load.runbase",
        "crisisctl.load.schedule",
    }
)
ENV_VAR = "CRISISCTL_PURE_PYTHON"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the accelerated modules' ``.py`` sources, ahead of their extensions."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in ACCELERATED or path is None:
            return None
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            candidate = Path(entry) / leaf
            if candidate.is_file():
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


def install() -> None:
    """Load the request path from source when CRISISCTL_PURE_PYTHON is set (idempotent)."""
    if os.environ.get(ENV_VAR, "").strip() in ("", "0"):
        return
    if not any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def compiled() -> bool:
    """True when the guard's request path runs as compiled (mypyc) code."""
    from crisisctl.guard import middleware

    return not str(getattr(middleware, "__file__", "")).endswith(".py")
