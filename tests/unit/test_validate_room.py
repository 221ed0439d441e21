"""The validation suite is a room of its own beside the load engine (phase 5 uses phase 4)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import crisisctl

SRC = Path(crisisctl.__file__).resolve().parent


def imported_modules(folder: Path) -> set[str]:
    """Every `crisisctl...` module named by an import statement under `folder`."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("crisisctl")}


def test_the_suite_lives_in_its_own_package_with_a_docstring() -> None:
    package = importlib.import_module("crisisctl.validate")
    assert package.__doc__ and "phase 5" in package.__doc__
    for name in ("suite", "checks", "options", "report"):
        module = importlib.import_module(f"crisisctl.validate.{name}")
        assert module.__doc__, name
    assert {"run_validation", "ValidateOptions", "CheckResult"} <= set(package.__all__)


def test_the_load_engine_keeps_no_validation_code_and_never_imports_it() -> None:
    load = SRC / "load"
    assert not list(load.glob("validate*.py")) and not (load / "checks.py").exists()
    assert not {m for m in imported_modules(load) if m.startswith("crisisctl.validate")}


def test_the_suite_uses_the_engine() -> None:
    assert any(m.startswith("crisisctl.load") for m in imported_modules(SRC / "validate"))
