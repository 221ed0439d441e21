"""Run a guard benchmark side by side with an earlier build of the guard.

A change to the request path is judged against the code before it, measured at the same
moment on the same machine (a VM's speed drifts between runs far more than most changes
move the figures). This tool serves every variant you name ``NAME_base`` from another git
revision, beside the variants of the working tree, in one run of the benchmark:

    .venv/bin/python benchmarks/against_base.py REV BENCH --variants V1,V2_base,... [ARGS]

* REV: any git revision (``HEAD~1``, a hash); BENCH: ``guard_overhead`` (wall clock under
  wrk), ``guard_instructions`` (callgrind instructions) or ``guard_misses`` (callgrind cache
  misses); ARGS: the benchmark's own options (``--rounds 7``, ``--no-profile``, …).
* REV is checked out once into ``.bench-base/<hash>/`` (a git worktree, ignored by git) and its
  request path compiled there by its own ``hatch_build.py`` with this interpreter; later runs
  reuse it (``--rebuild`` compiles it again).
* ``NAME_base`` is variant ``NAME`` of `benchmarks/apps/overhead_apps.py` (the working tree's
  app definitions), with REV's ``src`` first on the server's ``PYTHONPATH``: only the guard's
  code differs. Its baseline is NAME's.
* Results go to ``benchmarks/results/BENCH_experiments.json`` unless ``--output`` is given:
  never to the benchmark's own results, whose medians are those of the working tree's code.

All traffic goes to 127.0.0.1, as in the benchmarks themselves.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKTREES = ROOT / ".bench-base"
BENCHES = ("guard_overhead", "guard_instructions", "guard_misses")
SUFFIX = "_base"


def resolve(rev: str) -> str:
    """The full hash of `rev`; exits with one sentence when git does not know it."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: git knows no revision {rev!r}: give a commit hash or a ref")
    return proc.stdout.strip()


def checkout(commit: str, rebuild: bool) -> Path:
    """The worktree of `commit`, with its request path compiled."""
    tree = WORKTREES / commit[:12]
    marker = tree / ".bench-base-built"
    if not tree.exists():
        WORKTREES.mkdir(exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    if rebuild or not marker.exists():
        print(f"against_base: compiling the request path of {commit[:12]} in {tree}")
        subprocess.run([sys.executable, "hatch_build.py"], cwd=tree, check=True)
        marker.write_text(commit + "\n")
    return tree


def register(bench: ModuleType, modules: list[ModuleType], names: list[str], src: Path) -> None:
    """Add `NAME_base` for each such name to the variant tables the benchmark reads, and serve
    those variants with `src` first on PYTHONPATH."""
    for module in modules:
        variants: dict[str, Any] = module.VARIANTS
        realistic = set(getattr(module, "REALISTIC", ()))
        for name in names:
            original = name.removesuffix(SUFFIX)
            if original not in variants:
                raise SystemExit(f"error: no variant {original!r} to serve as {name!r}")
            variants[name] = variants[original]
            if original in realistic:
                realistic.add(name)
        if hasattr(module, "REALISTIC"):
            setattr(module, "REALISTIC", frozenset(realistic))  # noqa: B010
    env_function = "server_env" if hasattr(bench, "server_env") else "variant_env"
    original_env = getattr(bench, env_function)

    def env_for(name: str = "") -> dict[str, str]:
        if not name.endswith(SUFFIX):
            env: dict[str, str] = original_env(name)
            return env
        env = original_env(name.removesuffix(SUFFIX))
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
        return env

    setattr(bench, env_function, env_for)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare with")
    parser.add_argument("bench", choices=BENCHES)
    parser.add_argument("--rebuild", action="store_true", help="compile REV's worktree again")
    args, rest = parser.parse_known_args(argv)
    variants = next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--variants"), "")
    names = [v for v in variants.split(",") if v.endswith(SUFFIX)]
    if not names:
        parser.error(f"name at least one variant NAME{SUFFIX} in --variants")
    if "--output" not in rest:
        rest += [
            "--output",
            str(ROOT / "benchmarks" / "results" / f"{args.bench}_experiments.json"),
        ]
    commit = resolve(args.rev)
    tree = checkout(commit, args.rebuild)
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    module = importlib.import_module(f"benchmarks.{args.bench}")
    tables = [importlib.import_module("benchmarks.apps.overhead_apps"), module]
    serving = module
    if args.bench == "guard_misses":  # it serves its variants through guard_instructions
        serving = importlib.import_module("benchmarks.guard_instructions")
        tables.append(serving)
    register(serving, tables, names, tree / "src")
    print(f"against_base: {', '.join(names)} served from {commit[:12]} ({tree / 'src'})")
    sys.argv = [f"{args.bench}.py", *rest]  # (each benchmark's main() reads sys.argv)
    result: int = module.main()
    return result


if __name__ == "__main__":
    raise SystemExit(main())
