"""The console's static assets: the vendored chart library is exactly the locked npm package's,
nothing is loaded from another origin, and every ES module is valid JavaScript.

The vendored files are git-ignored and made by ``scripts/vendor-frontend.sh`` (``make unit``,
``make test`` and ``make demo`` run it): a missing one fails here with what to run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "src" / "crisisctl" / "server"
STATIC = SERVER / "static"
VENDOR = STATIC / "vendor"
FRONTEND = ROOT / "frontend"
VENDORED = {
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}
#: a URL with a scheme or protocol-relative, where a page or module would load code or styles
REMOTE = re.compile(
    r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|(?:import|from)\s*\(?\s*["'](?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//|EventSource\(\s*["'](?:https?:)?//""",
    re.IGNORECASE,
)


def own_files() -> list[Path]:
    """The templates, modules and stylesheets written here (the vendored library apart)."""
    files = [*SERVER.joinpath("templates").glob("*.html"), *STATIC.rglob("*.js")]
    files += STATIC.rglob("*.css")
    return [f for f in files if VENDOR not in f.parents]


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_the_vendored_chart_library_is_byte_identical_to_the_locked_package(name: str) -> None:
    vendored = VENDOR / name
    installed = FRONTEND / "node_modules" / VENDORED[name]
    assert vendored.is_file() and installed.is_file(), (
        f"{vendored.relative_to(ROOT)} is missing: run `make vendor` (scripts/vendor-frontend.sh)"
    )
    assert vendored.read_bytes() == installed.read_bytes()


def test_the_installed_package_is_the_locked_version() -> None:
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/uplot"]
    wanted = json.loads((FRONTEND / "package.json").read_text())["dependencies"]["uplot"]
    installed = json.loads((FRONTEND / "node_modules/uplot/package.json").read_text())
    assert locked["version"] == wanted == installed["version"]
    assert locked["integrity"].startswith("sha512-")
    stamp = (VENDOR / ".lock-sha256").read_text().strip()
    assert stamp == hashlib.sha256((FRONTEND / "package-lock.json").read_bytes()).hexdigest()


def test_no_page_module_or_stylesheet_loads_anything_from_another_origin() -> None:
    files = own_files()
    assert len(files) >= 15
    offenders = [
        f"{f.relative_to(ROOT)}: {m.group(0)}"
        for f in files
        for m in REMOTE.finditer(f.read_text())
    ]
    assert offenders == []


def test_the_remote_pattern_catches_a_cdn_script() -> None:
    assert REMOTE.search('<script src="https://cdn.example/uplot.js">')
    assert REMOTE.search("<link href='//cdn.example/u.css'>")
    assert REMOTE.search('import x from "https://esm.example/x.js"')
    assert not REMOTE.search('<script src="/static/vendor/uPlot.iife.min.js">')


def test_every_module_is_valid_javascript() -> None:
    node = shutil.which("node")
    assert node, "node is needed (scripts/vendor-frontend.sh installs it with npm)"
    modules = sorted(STATIC.joinpath("js").glob("*.js"))
    assert len(modules) >= 10
    for module in modules:
        check = subprocess.run(
            [node, "--experimental-default-type=module", "--check", str(module)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, f"{module.name}: {check.stderr}"
