"""The request-path modules compiled with mypyc, and how a stale compiled copy is told apart.

`MODULES` is the one list of compiled modules: ``hatch_build.py`` compiles it (the Makefile asks
it for their paths with ``python hatch_build.py --list``), and `crisisctl._pure` loads them from
source when asked to (``CRISISCTL_PURE_PYTHON=1``) or when their compiled copy is stale. Only
the standard library is imported: the build reads this file before the package's dependencies
exist.

Staleness. When it compiles, the build records the SHA-256 of every source in `MANIFEST`, a JSON
file beside the package's ``__init__.py`` (in ``src/`` for in-place builds, in the wheel
otherwise). A compiled copy is stale when its source's digest differs from the recorded one: an
edit, not a ``touch``, a checkout of identical content or the order in which an installer wrote
the files. Without a record (an extension built before manifests, or by hand) it is stale when
it is older than its source. A module whose source is absent has nothing else to run: never
stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

#: the per-request modules (guard, load engine), compiled together as one mypyc group
MODULES: tuple[str, ...] = (
    "crisisctl.stats",
    "crisisctl.guard.breaker",
    "crisisctl.guard.clientkey",
    "crisisctl.guard.concurrency",
    "crisisctl.guard.latency_reference",
    "crisisctl.guard.digest",
    "crisisctl.guard.exposition",
    "crisisctl.guard.limits_json",
    "crisisctl.guard.metrics",
    "crisisctl.guard.middleware",
    "crisisctl.guard.ratelimit",
    "crisisctl.guard.refusals",
    "crisisctl.guard.routebuild",
    "crisisctl.guard.routes",
    "crisisctl.guard.routetrie",
    "crisisctl.guard.runtime",
    "crisisctl.guard.ticker",
    "crisisctl.guard.websocket",
    "crisisctl.guard.window",
    "crisisctl.load.lanes",
    "crisisctl.load.recorder",
    "crisisctl.load.recording",
    "crisisctl.load.runbase",
    "crisisctl.load.schedule",
    "crisisctl.transport.client",
)
#: modules compiled by older versions and now plain source (a shim, moved elsewhere): a left-over
#: extension of theirs would shadow the new source, so they always load from source and the
#: build deletes their extensions
RETIRED: tuple[str, ...] = ("crisisctl.load.client",)
#: {module: SHA-256 of the source it was compiled from}, beside the package's __init__.py
MANIFEST = "_compiled.json"


def source_of(module: str) -> str:
    """The source of `module` relative to the directory holding the package
    (``crisisctl.guard.middleware`` -> ``crisisctl/guard/middleware.py``)."""
    return module.replace(".", "/") + ".py"


def digest(source: Path) -> str:
    """SHA-256 of a source file (hex)."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def read_manifest(package_dir: Path) -> dict[str, str]:
    """The digests recorded by the last compilation ({} when there is no readable manifest)."""
    try:
        data = json.loads((package_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(module): str(value) for module, value in data.items()}


def write_manifest(package_dir: Path, digests: Mapping[str, str]) -> Path:
    """Record the digests of the sources just compiled; the manifest's path."""
    path = package_dir / MANIFEST
    path.write_text(json.dumps(dict(sorted(digests.items())), indent=1) + "\n", encoding="utf-8")
    return path


def is_stale(source: Path, extension: Path, recorded: str | None) -> bool:
    """Whether `extension` was compiled from another version of `source` than the one on disk
    (`recorded`: the manifest's digest for it, None when there is none)."""
    try:
        if recorded is not None:
            return digest(source) != recorded
        return extension.stat().st_mtime < source.stat().st_mtime
    except OSError:  # no source (or no extension): nothing to compare
        return False
