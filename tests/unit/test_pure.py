"""The run-time switch between the compiled request path and its pure-Python source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from crisisctl import _accelerated as accelerated
from crisisctl import _pure

ROOT = Path(__file__).resolve().parents[2]
EXT_SUFFIX = str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
PROBE = (
    "import json, crisisctl, crisisctl._pure as p, importlib;"
    "files = {m: importlib.import_module(m).__file__ for m in sorted(p.ACCELERATED)};"
    "print(json.dumps({'compiled': p.compiled(), 'files': files}))"
)


def _probe(pure: str | None) -> dict[str, object]:
    env = dict(os.environ)
    env.pop(_pure.ENV_VAR, None)
    if pure is not None:
        env[_pure.ENV_VAR] = pure
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _extensions_built() -> bool:
    suffixes = (".so", ".pyd")
    mod = ROOT / "src" / "crisisctl" / "guard"
    return any(p.name.startswith("middleware.") and p.suffix in suffixes for p in mod.iterdir())


def test_pure_python_switch_loads_every_accelerated_module_from_source() -> None:
    result = _probe("1")
    assert result["compiled"] is False
    files = result["files"]
    assert isinstance(files, dict)
    assert set(files) == set(_pure.ACCELERATED)
    assert all(str(f).endswith(".py") for f in files.values())


@pytest.mark.parametrize("value", ["", "0"])
def test_empty_or_zero_leaves_the_default(value: str) -> None:
    result = _probe(value)
    assert result["compiled"] is _extensions_built()


def test_default_uses_the_extensions_when_they_were_built() -> None:
    result = _probe(None)
    files = result["files"]
    assert isinstance(files, dict)
    built = _extensions_built()
    assert result["compiled"] is built
    assert all(str(f).endswith(".py") is not built for f in files.values())


# -- one list of compiled modules --------------------------------------------------------------
def test_every_module_the_guards_http_request_path_runs_is_compiled() -> None:
    """Issue 14 (13): the client key (behind trusted proxies) and the route building of a
    route-cache miss run on every request of an app whose paths carry ids; in pure Python they
    cost more than the rest of the guard's request path."""
    request_path = {
        "crisisctl.guard.clientkey",
        "crisisctl.guard.middleware",
        "crisisctl.guard.ratelimit",
        "crisisctl.guard.routebuild",
        "crisisctl.guard.routes",
        "crisisctl.stats",
    }
    assert request_path <= set(accelerated.MODULES)


def test_the_compiled_modules_are_listed_once() -> None:
    """hatch_build.py, the Makefile and _pure all read crisisctl/_accelerated.py's list: no
    other file spells it, so the three cannot diverge."""
    sources = [accelerated.source_of(module) for module in accelerated.MODULES]
    assert all((ROOT / "src" / source).is_file() for source in sources)
    assert set(accelerated.MODULES) == _pure.ACCELERATED
    listed = subprocess.run(
        [sys.executable, str(ROOT / "hatch_build.py"), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert listed == [f"src/{source}" for source in sources]
    makefile = (ROOT / "Makefile").read_text()
    assert "ACCEL_SRC := $(shell $(PYTHON) hatch_build.py --list)" in makefile
    assert "middleware.py" not in makefile and "schedule.py" not in makefile
    for path in ("Makefile", "hatch_build.py", "src/crisisctl/_pure.py"):
        text = (ROOT / path).read_text()
        for module in accelerated.MODULES:
            for spelling in (module, accelerated.source_of(module)):
                assert spelling not in text, f"{path} spells {spelling}: use _accelerated.py"


# -- a stale compiled copy is never run --------------------------------------------------------
def _layout(tmp_path: Path, extensions: bool = True) -> Path:
    """A package tree shaped like src/: every accelerated source, and a stand-in extension
    beside each compiled from it (digests in the manifest)."""
    root = tmp_path / "src"
    digests = {}
    for module in accelerated.MODULES:
        source = root / accelerated.source_of(module)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f'"""{module}"""\n')
        digests[module] = accelerated.digest(source)
        if extensions:
            source.with_name(source.stem + EXT_SUFFIX).write_bytes(b"\0compiled")
    if extensions:
        accelerated.write_manifest(root / "crisisctl", digests)
    return root


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_an_edited_source_makes_the_whole_group_load_from_source(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    assert _pure.stale_modules(root) == []
    source = root / "crisisctl/guard/middleware.py"
    source.write_text(source.read_text() + "# edited\n")
    assert _pure.stale_modules(root) == ["crisisctl.guard.middleware"]


def test_a_touched_or_reinstalled_source_of_the_same_content_is_not_stale(
    tmp_path: Path,
) -> None:
    """An installer may write a wheel's sources after its extensions; a checkout or `touch` may
    renew a source's time: only the content counts when the digest was recorded."""
    root = _layout(tmp_path)
    for module in accelerated.MODULES:
        source = root / accelerated.source_of(module)
        _age(source.with_name(source.stem + EXT_SUFFIX), 60.0)
    assert _pure.stale_modules(root) == []


def test_without_a_manifest_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    root = _layout(tmp_path)
    (root / "crisisctl" / accelerated.MANIFEST).unlink()
    assert _pure.stale_modules(root) == []
    extension = root / ("crisisctl/stats" + EXT_SUFFIX)
    _age(extension, 60.0)
    assert _pure.stale_modules(root) == ["crisisctl.stats"]


def test_a_missing_extension_or_source_is_judged_sensibly(tmp_path: Path) -> None:
    """One extension missing from a compiled group loads the whole group from source; no
    extension at all, or no sources beside the extensions (a wheel without sources), is fine."""
    assert _pure.stale_modules(_layout(tmp_path / "plain", extensions=False)) == []
    root = _layout(tmp_path / "partial")
    (root / ("crisisctl/load/lanes" + EXT_SUFFIX)).unlink()
    assert _pure.stale_modules(root) == ["crisisctl.load.lanes"]
    root = _layout(tmp_path / "no-sources")
    for module in accelerated.MODULES:
        (root / accelerated.source_of(module)).unlink()
    assert _pure.stale_modules(root) == []


STALE_PROBE = (
    "import json, crisisctl, crisisctl._pure as p, importlib;"
    "files = {m: importlib.import_module(m).__file__ for m in sorted(p.ACCELERATED)};"
    "print(json.dumps({'compiled': p.compiled(), 'files': files, 'root': str(p.ROOT)}))"
)


def _run_copy(src: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    env.pop(_pure.ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-c", STALE_PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=src.parent,
    )


@pytest.mark.skipif(not _extensions_built(), reason="the request path is not compiled here")
def test_an_edited_source_runs_instead_of_its_stale_compiled_copy(tmp_path: Path) -> None:
    """A copy of the compiled tree: as built it runs compiled, silently; once a source is
    edited it runs from source, with one warning naming the file and how to recompile."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    fresh = _run_copy(src)
    result = json.loads(fresh.stdout)
    assert result["root"] == str(src)
    assert result["compiled"] is True and fresh.stderr == ""
    assert not any(str(f).endswith(".py") for f in result["files"].values())

    middleware = src / "crisisctl/guard/middleware.py"
    middleware.write_text(middleware.read_text() + "\nEDITED = True\n")
    stale = _run_copy(src)
    result = json.loads(stale.stdout)
    assert result["compiled"] is False
    assert all(str(f).endswith(".py") for f in result["files"].values())
    assert "crisisctl/guard/middleware.py changed" in stale.stderr
    assert "make accel" in stale.stderr and "hatch_build.py" in stale.stderr
    assert stale.stderr.count("\n") == 1  # one warning, not one per module


def test_a_retired_module_loads_from_source_despite_a_left_over_extension(
    tmp_path: Path,
) -> None:
    # crisisctl.load.client was compiled before it became a shim of crisisctl.transport.client:
    # an old checkout's extension must never shadow the shim
    assert "crisisctl.load.client" in accelerated.RETIRED
    assert not set(accelerated.RETIRED) & set(accelerated.MODULES)
    package = tmp_path / "crisisctl" / "load"
    package.mkdir(parents=True)
    (package / "client.py").write_text("VALUE = 1\n")
    (package / f"client{EXT_SUFFIX}").write_bytes(b"not an extension")
    finder = _pure._SourceFirst(pure=False, root=tmp_path)
    spec = finder.find_spec("crisisctl.load.client", [str(package)])
    assert spec is not None and str(spec.origin).endswith("client.py")
