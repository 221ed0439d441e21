"""The compiled request path's module constants are `Final`, so mypyc inlines them.

A module-level ``NAME = 1.0`` in a compiled module is a module global to mypyc: every read is a
dict lookup of the module's namespace (~130 instructions under callgrind, 2026-12-07). Four such
reads in `LatencyHistogram.record_us` cost more than the rest of the function. ``NAME: Final =
1.0`` is inlined as a C constant. A constant some test must patch stays a global (`PATCHED`).
"""

from __future__ import annotations

import ast
from pathlib import Path

from crisisctl._accelerated import MODULES

SRC = Path(__file__).resolve().parents[2] / "src"
#: module constants a test replaces with monkeypatch: they must stay globals
PATCHED = {("crisisctl.guard.routes", "_CACHE_LIMIT")}


def constant_value(node: ast.expr, constants: set[str]) -> bool:
    """A literal, or arithmetic on literals and constants defined above."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.UnaryOp):
        return constant_value(node.operand, constants)
    if isinstance(node, ast.BinOp):
        return constant_value(node.left, constants) and constant_value(node.right, constants)
    return False


def plain_constants(source: str) -> list[str]:
    """Module-level names bound to a constant value without a `Final` annotation."""
    tree = ast.parse(source)
    constants: set[str] = set()
    plain: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.value is not None and constant_value(node.value, constants):
                constants.add(node.target.id)
                if "Final" not in ast.unparse(node.annotation):
                    plain.append(node.target.id)
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and constant_value(node.value, constants)
        ):
            constants.add(node.targets[0].id)
            plain.append(node.targets[0].id)
    return plain


def test_every_constant_of_a_compiled_module_is_final() -> None:
    found: dict[str, list[str]] = {}
    for module in MODULES:
        source = (SRC / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        names = [name for name in plain_constants(source) if (module, name) not in PATCHED]
        if names:
            found[module] = names
    assert found == {}, f"annotate these `Final` (mypyc then inlines them): {found}"


def test_the_check_sees_a_plain_constant() -> None:
    source = "A = 1\nB: Final = 2.0\nC = A * 2\nD = list\nE: int = -B\nF = f(1)\n"
    assert plain_constants(source) == ["A", "C", "E"]
