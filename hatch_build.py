"""Build hook: compile the per-request paths with mypyc (pure Python stays the fallback).

The guard runs on every request of the service it protects, and the load engine's client and
lanes on every request it sends, so their per-request cost is a product feature (see
benchmarks/guard_overhead.py and benchmarks/loadgen_throughput.py). The modules on those
paths are plain, fully typed Python; mypyc (part of mypy) compiles them to C extensions,
which roughly halves the instructions each request costs. Nothing else changes: the same
source files are the pure-Python implementation, used when no C compiler is available, when
the build is told not to compile (``CRISISCTL_NO_COMPILE=1``), or at run time with
``CRISISCTL_PURE_PYTHON=1``.

* wheel builds (``pip install .``): the extensions are built in a temporary directory and
  added to the wheel, which becomes platform-specific;
* editable builds (``pip install -e .``, what the Makefile does): the extensions are built in
  place, next to their sources in ``src/`` (git ignores them), and rebuilt only when a
  source is newer than its extension;
* ``python hatch_build.py`` builds in place by hand; ``--check`` exits 1 when an extension
  is stale (``tests/conftest.py`` refuses to test stale extensions); ``--list`` prints the
  compiled sources' paths (the Makefile's ACCEL_SRC).

The list of compiled modules lives in ``src/crisisctl/_accelerated.py`` (read here without
importing the package), with the digests of the compiled sources recorded beside the
extensions so that the run time never uses a compiled copy of an older source (see there).

A failed compilation never fails the install: it prints why and leaves pure Python.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PACKAGE = SRC / "crisisctl"


def _load_list() -> Any:
    """crisisctl/_accelerated.py, executed on its own (the package needs its dependencies)."""
    spec = importlib.util.spec_from_file_location(
        "crisisctl_accelerated", PACKAGE / "_accelerated.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accel = _load_list()
MODULES: tuple[str, ...] = accel.MODULES
#: the modules on the request path, as sources relative to src/ (the list: _accelerated.py)
ACCELERATED: tuple[str, ...] = tuple(accel.source_of(module) for module in MODULES)
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def extension_of(source: str) -> Path:
    """Where the in-place extension of one accelerated source lives."""
    return SRC / (source[: -len(".py")] + EXT_SUFFIX)


def source_digests() -> dict[str, str]:
    """{module: digest} of the sources as they are now (taken before compiling them)."""
    return {module: accel.digest(SRC / accel.source_of(module)) for module in MODULES}


def stale_sources() -> list[str]:
    """Accelerated sources to recompile: extension missing, stale, unrecorded, or older than
    this build script."""
    recorded = accel.read_manifest(PACKAGE)
    stale = []
    for module, source in zip(MODULES, ACCELERATED, strict=True):
        ext = extension_of(source)
        if (
            not ext.exists()
            or module not in recorded
            or accel.is_stale(SRC / source, ext, recorded[module])
            or ext.stat().st_mtime < Path(__file__).stat().st_mtime
        ):
            stale.append(source)
    return stale


def stale_extensions() -> list[str]:
    """In-place extensions that exist but were compiled from another version of their source
    (the run time would load the source instead; tests must not run them)."""
    recorded = accel.read_manifest(PACKAGE)
    return [
        source
        for module, source in zip(MODULES, ACCELERATED, strict=True)
        if extension_of(source).exists()
        and accel.is_stale(SRC / source, extension_of(source), recorded.get(module))
    ]


def remove_in_place() -> None:
    """Delete every in-place extension (the package then runs as pure Python)."""
    retired = [extension_of(accel.source_of(m)) for m in accel.RETIRED]
    built = [extension_of(s) for s in ACCELERATED]
    for path in [*SRC.glob(f"*__mypyc{EXT_SUFFIX}"), *built, *retired]:
        path.unlink(missing_ok=True)
    (PACKAGE / accel.MANIFEST).unlink(missing_ok=True)


def compile_to(out_dir: Path) -> list[Path]:
    """Compile the accelerated modules with mypyc into `out_dir`; the files written."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    work = ROOT / "build" / "mypyc"
    work.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(SRC)  # mypy names modules from their paths: crisisctl/guard/<name>.py
    try:
        extensions = mypycify(
            [f"--config-file={ROOT / 'pyproject.toml'}", *ACCELERATED],
            opt_level="3",
            target_dir=str(work / "c"),
        )
        dist = Distribution({"name": "crisisctl-accel", "ext_modules": extensions})
        command: Any = dist.get_command_obj("build_ext")
        command.build_lib = str(out_dir)
        command.build_temp = str(work / "temp")
        command.inplace = False
        dist.run_command("build_ext")
        return [Path(p) for p in command.get_outputs()]
    finally:
        os.chdir(cwd)


def compile_in_place(force: bool = False) -> bool:
    """Build the in-place extensions (when stale); False, with the reason printed, on failure."""
    if os.environ.get("CRISISCTL_NO_COMPILE"):
        print("crisisctl: CRISISCTL_NO_COMPILE is set: the request paths stay pure Python")
        return False
    if not force and not stale_sources():
        return True
    try:
        digests = source_digests()  # before compiling: an edit made meanwhile shows as stale
        with tempfile.TemporaryDirectory(prefix="crisisctl-accel-") as tmp:
            outputs = compile_to(Path(tmp))
            for output in outputs:
                target = SRC / output.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(output, target)
                os.utime(target)  # newer than its source from now on
        accel.write_manifest(PACKAGE, digests)
        for module in accel.RETIRED:  # a left-over extension would shadow the new source
            extension_of(accel.source_of(module)).unlink(missing_ok=True)
    except Exception as exc:  # a missing compiler must not fail the install
        _explain(exc)
        remove_in_place()  # stale extensions would shadow the edited sources
        return False
    print(f"crisisctl: compiled {len(ACCELERATED)} request-path modules with mypyc (in place)")
    return True


def _explain(exc: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(
        f"crisisctl: could not compile the request paths with mypyc ({detail[-300:]}); "
        "it stays pure Python, which works the same, only slower",
        file=sys.stderr,
    )


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script without hatchling installed
    BuildHookInterface = object  # type: ignore[assignment,misc]


class AcceleratorHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Hatchling build hook (registered in pyproject.toml as the wheel's custom hook)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            compile_in_place()
            return
        if os.environ.get("CRISISCTL_NO_COMPILE"):
            return
        out_dir = Path(self.directory) / "crisisctl-accel"
        try:
            digests = source_digests()
            outputs = compile_to(out_dir)
            (out_dir / "crisisctl").mkdir(parents=True, exist_ok=True)
            outputs.append(accel.write_manifest(out_dir / "crisisctl", digests))
        except Exception as exc:
            _explain(exc)
            return
        for output in outputs:
            build_data["force_include"][str(output)] = str(output.relative_to(out_dir))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


def main(argv: list[str]) -> int:
    if "--list" in argv:
        print(" ".join(f"src/{source}" for source in ACCELERATED))
        return 0
    if "--check" in argv:
        stale = stale_extensions()
        for source in stale:
            print(
                f"stale extension: {extension_of(source).relative_to(ROOT)} was compiled from "
                f"another version of {source}"
            )
        return 1 if stale else 0
    return 0 if compile_in_place(force="--force" in argv) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
