"""Cache misses and branch mispredictions per request, simulated by callgrind (noise-free).

Why: on the realistic app (`benchmarks/apps/realistic_app.py`) the guard's instruction count
(`guard_instructions.py`) does not predict its wall-clock cost (`guard_overhead.py`). The floor
(`benchmarks/apps/floor_middleware.py`, the least a Python middleware does for the same jobs,
interpreted) runs about as many instructions per request as the guard, yet costs half its
server CPU time. What differs is where those instructions go: the interpreter's loop, hot and
shared with the app, against the guard's compiled code, a large body of machine code of its
own. This benchmark counts what that costs, on the same servers and requests as
`guard_instructions.py` (uvicorn under ``valgrind --tool=callgrind``, N1 and N2 sequential
requests, the per-request figure is the difference over N2 − N1), with callgrind's cache
simulation (``--cache-sim=yes``: 32 KiB 8-way L1 instruction and data caches, as on this
machine) and branch simulation (``--branch-sim=yes``):

* I1mr / D1mr: L1 instruction / data read misses; D1mw: data write misses;
* Bcm / Bim: mispredicted conditional / indirect branches;
* "miss events": their sum, the noise-free figure to watch when working on the request
  path's wall-clock cost (a simulation: real caches and predictors are larger and smarter, so
  compare variants, never read the figures as cycles).

The guard's figures include its ticker's time-driven work, which callgrind (tens of times
slower than the real server) puts on each request many times over, as `guard_instructions.py`
explains: the guard's figures here are upper bounds, the floor has no ticker.

Every run is appended to ``benchmarks/results/guard_misses.json`` and the medians over every
stored full run are printed. Run: ``.venv/bin/python benchmarks/guard_misses.py
[--variants realistic_bare,realistic_guard,realistic_floor] [--n1 500 --n2 3500] [--quick]``.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "guard_misses.json"
SIMULATE = ("--cache-sim=yes", "--branch-sim=yes")
#: callgrind's event order with both simulations on
EVENTS = (
    "Ir",
    "Dr",
    "Dw",
    "I1mr",
    "D1mr",
    "D1mw",
    "ILmr",
    "DLmr",
    "DLmw",
    "Bc",
    "Bcm",
    "Bi",
    "Bim",
)
SHOWN = ("Ir", "I1mr", "D1mr", "D1mw", "Bcm", "Bim")
MISS_EVENTS = ("I1mr", "D1mr", "D1mw", "Bcm", "Bim")
DEFAULT_VARIANTS = (
    "realistic_bare",
    "realistic_guard",
    "realistic_floor",
    "realistic_guard_jobs_only",
    "bare",
    "guard",
)

sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402
from benchmarks.apps.overhead_apps import VARIANTS  # noqa: E402
from benchmarks.guard_instructions import (  # noqa: E402
    baseline_of,
    collect_server,
    ensure_valgrind,
    with_baselines,
)


def per_request(low: list[int], high: list[int], n1: int, n2: int) -> dict[str, float]:
    """Each event per request: the difference of the two runs over the extra requests."""
    if len(low) != len(EVENTS) or len(high) != len(EVENTS):
        raise RuntimeError(f"callgrind reported {len(high)} events, expected {len(EVENTS)}")
    figures = {e: round((b - a) / (n2 - n1), 1) for e, a, b in zip(EVENTS, low, high, strict=True)}
    figures["miss_events"] = round(sum(figures[e] for e in MISS_EVENTS), 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=3500)
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="smoke test: N1 200, N2 700")
    args = parser.parse_args(argv)
    if args.quick:
        args.n1, args.n2 = 200, 700
    if args.n2 <= args.n1 or args.n1 < 1:
        parser.error("need 1 <= --n1 < --n2")
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = with_baselines(names)  # as guard_instructions.py: baselines counted too, first
    ensure_valgrind()
    started = time.time()
    jobs = [(name, n) for name in names for n in (args.n1, args.n2)]
    print(f"guard_misses: {len(jobs)} callgrind runs with cache and branch simulation")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        totals = dict(
            zip(
                jobs,
                pool.map(lambda job: collect_server(job[0], job[1], simulate=SIMULATE), jobs),
                strict=True,
            )
        )
    rows: dict[str, Any] = {}
    for name in names:
        figures = per_request(totals[(name, args.n1)], totals[(name, args.n2)], args.n1, args.n2)
        rows[name] = {"per_request": figures, "baseline": baseline_of(name)}
    for row in rows.values():
        base = row["baseline"]
        row["added"] = (
            {k: round(v - rows[base]["per_request"][k], 1) for k, v in row["per_request"].items()}
            if base
            else None
        )
    print(f"\nadded per request over the bare app ({', '.join(SHOWN)}, miss events):")
    for name, row in rows.items():
        if row["added"] is None:
            shown = "  ".join(f"{e} {row['per_request'][e]:,.0f}" for e in SHOWN)
            print(f"  {name:22s} (baseline) {shown}")
            continue
        added = row["added"]
        shown = "  ".join(f"{e} {added[e]:+,.0f}" for e in SHOWN)
        print(f"  {name:22s} {shown}  miss events {added['miss_events']:+,.0f}")
    doc = {
        "benchmark": "guard_misses",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "settings": {"n1": args.n1, "n2": args.n2, "simulate": list(SIMULATE)},
        "variants": rows,
    }
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    print("\nmedians over every stored full run (added miss events per request):")
    for name in rows:
        if rows[name]["added"] is not None:
            print_median(
                f"  {name}",
                stored,
                lambda run, n=name: run["variants"][n]["added"]["miss_events"],
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
