"""The run-time switch between the compiled request path and its pure-Python source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crisisctl import _pure

ROOT = Path(__file__).resolve().parents[2]
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


def test_accelerated_list_matches_the_build_hook() -> None:
    text = (ROOT / "hatch_build.py").read_text()
    for module in _pure.ACCELERATED:
        assert f'"{module.replace(".", "/")}.py"' in text
