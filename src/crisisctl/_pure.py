"""Run-time choice between the compiled request path and its pure-Python source.

The guard's and the load engine's per-request modules (`crisisctl._accelerated.MODULES`) are
compiled with mypyc when the package is built (see ``hatch_build.py``); each compiled extension
sits next to its ``.py`` source and Python's import system prefers it. A finder put in front of
the import system (``crisisctl/__init__.py`` calls `install` first thing) loads those modules
from source instead:

* when ``CRISISCTL_PURE_PYTHON=1`` — for debugging, profiling with Python tools, or comparing
  the two;
* when a compiled copy is stale: its source was edited after it was compiled (see
  `crisisctl._accelerated` for how that is told). Then the whole group loads from source —
  the compiled modules call each other directly, so they cannot be mixed with a source module
  standing in for one of them — and one warning says which source changed and how to
  recompile. Behaviour always matches the sources on disk.

The staleness check reads the compiled sources' digests once, at the first import of one of
these modules (a fraction of a millisecond).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from crisisctl._accelerated import MODULES, RETIRED, is_stale, read_manifest

#: the modules hatch_build.py compiles (the list itself: crisisctl/_accelerated.py)
ACCELERATED = frozenset(MODULES)
#: once compiled, now source only: never loaded from a left-over extension
_RETIRED = frozenset(RETIRED)
ENV_VAR = "CRISISCTL_PURE_PYTHON"
#: the directory holding the ``crisisctl`` package (src/ in a checkout, site-packages installed)
ROOT = Path(__file__).resolve().parent.parent
RECOMPILE = "run `make accel` (or `.venv/bin/python hatch_build.py`) to recompile"


def extension_for(source: Path) -> Path | None:
    """The compiled extension the import system would load instead of `source`, if any."""
    stem = source.with_suffix("")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def stale_modules(root: Path) -> list[str]:
    """The accelerated modules under `root` that must not run compiled: those whose extension
    is stale, and — when any extension exists — those whose extension is missing."""
    recorded = read_manifest(root / "crisisctl")
    stale: list[str] = []
    missing: list[str] = []
    for module in MODULES:
        source = root / (module.replace(".", "/") + ".py")
        extension = extension_for(source)
        if extension is None:
            missing.append(module)
        elif is_stale(source, extension, recorded.get(module)):
            stale.append(module)
    if len(missing) == len(MODULES):
        return []  # not compiled at all: the sources load anyway
    return stale + missing


class _SourceFirst:
    """Finds the accelerated modules' ``.py`` sources, ahead of their extensions: always when
    `pure`, else only once a stale compiled copy was found (checked at the first import).

    (A meta path finder needs only `find_spec`; not subclassing ``importlib.abc`` keeps that
    module and ``importlib.resources`` out of every command's start-up.)"""

    def __init__(self, pure: bool, root: Path = ROOT) -> None:
        self.pure = pure
        self.root = root
        self.checked = pure

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None:
            return None
        if fullname in _RETIRED:
            return self._source(fullname, path)
        if fullname not in ACCELERATED:
            return None
        if not self.checked:
            self.checked = True
            self.pure = self._check()
        if not self.pure:
            return None
        return self._source(fullname, path)

    @staticmethod
    def _source(fullname: str, path: Sequence[str]) -> importlib.machinery.ModuleSpec | None:
        leaf = fullname.rpartition(".")[2] + ".py"
        for entry in path:
            candidate = Path(entry) / leaf
            if candidate.is_file():
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None

    def _check(self) -> bool:
        stale = stale_modules(self.root)
        if stale:
            import logging  # only a stale build pays for it

            logging.getLogger("crisisctl").warning(
                "crisisctl: the compiled request path is out of date (%s changed since it was "
                "compiled, or is not compiled): running it from source instead, slower; %s",
                ", ".join(module.replace(".", "/") + ".py" for module in stale),
                RECOMPILE,
            )
        return bool(stale)


def install() -> None:
    """Put the source-first finder in front of the import system (idempotent)."""
    if any(isinstance(finder, _SourceFirst) for finder in sys.meta_path):
        return
    pure = os.environ.get(ENV_VAR, "").strip() not in ("", "0")
    sys.meta_path.insert(0, _SourceFirst(pure))


def compiled() -> bool:
    """True when the guard's request path runs as compiled (mypyc) code."""
    from crisisctl.guard import middleware

    return not str(getattr(middleware, "__file__", "")).endswith(".py")
