"""Cache misses and branch mispredictions per request, simulated by callgrind (noise-free).

Why: on the realistic app (`benchmarks/apps/realistic_app.py`) the guard's instruction count
(`guard_instructions.py`) does not predict its wall-clock cost (`guard_overhead.py`). The floor
(`benchmarks/apps/floor_middleware.py`, the least a Python middleware does for the same jobs,
interpreted) runs about as many instructions per request as the guard, yet costs half its
server CPU time. What differs is where those instructions go: the interpreter's loop, hot and
shared with the app, against the guard's compiled code, a large body of machine code of its
own. This benchmark counts what that costs, on the same servers and requests as
`guard_instructions.py` (uvicorn under ``valgrind --tool=callgrind``, N1 and N2 sequential
requests after the same warm-up, the per-request figure is the difference over N2 − N1), with
callgrind's cache simulation (``--cache-sim=yes``: 32 KiB 8-way L1 instruction and data
caches, as on this machine) and branch simulation (``--branch-sim=yes``):

* I1mr / D1mr: L1 instruction / data read misses; D1mw: data write misses;
* Bcm / Bim: mispredicted conditional / indirect branches;
* "miss events": their sum, the noise-free figure to watch when working on the request
  path's wall-clock cost (a simulation: real caches and predictors are larger and smarter, so
  compare variants, never read the figures as cycles).

The guard's figures include its ticker's time-driven work, which callgrind (tens of times
slower than the real server) puts on each request many times over, as `guard_instructions.py`
explains: the guard's figures here are upper bounds, the floor has no ticker.

When ``realistic_bare`` and ``realistic_guard`` are both run, their servers' callgrind files are
kept for a moment and read per function (``callgrind_annotate``), and the realistic guard's
additions are split by the code they run in (`where`): its compiled code (the mypyc library
and the mypyc runtime inlined there), the interpreter (libpython), libc, and the rest (uvloop,
httptools). The split is stored with the run (``realistic_guard_added_by_where``).

Every run is appended to ``benchmarks/results/guard_misses.json`` and the medians over every
stored full run are printed. Run: ``.venv/bin/python benchmarks/guard_misses.py
[--variants realistic_bare,realistic_guard,realistic_floor] [--n1 500 --n2 3500] [--quick]``.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
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
    REALISTIC_CLIENTS,
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


#: the events split by where they happen (`by_where`), as callgrind_annotate shows them
WHERE_EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "Bcm", "Bim")
#: how `where`'s names are printed
PLACES = {
    "compiled": "the guard's compiled code (mypyc)",
    "interpreter": "the interpreter (libpython)",
    "libc": "libc (malloc, memcpy, …)",
    "other": "other (uvloop, httptools, …)",
}
#: the realistic pair whose difference is split by where it happens
SPLIT = ("realistic_bare", "realistic_guard")
_COLUMN = r"\s*(?:\.|[\d,]+)(?:\s+\(\s*[\d.]+%\))?"
_LINE = re.compile(rf"^((?:{_COLUMN}){{{len(WHERE_EVENTS)}}})\s+(\S.*)$")
_VALUE = re.compile(r"(\.|[\d,]+)(?:\s+\(\s*[\d.]+%\))?")


def where(entry: str) -> str:
    """Which code one of callgrind_annotate's ``file:function [object]`` entries belongs to:
    ``compiled`` (crisisctl's mypyc extension and the mypyc runtime inlined in it),
    ``interpreter`` (libpython, and its headers inlined elsewhere), ``libc``, or ``other``
    (uvloop, httptools, the dynamic loader, …)."""
    obj = entry.rsplit(" [", 1)[1] if entry.endswith("]") and " [" in entry else ""
    if obj:  # (code of one shared object)
        if "__mypyc" in obj or "/crisisctl/" in obj:
            return "compiled"
        if "libpython" in obj:
            return "interpreter"
        return "libc" if "libc.so" in obj else "other"
    # inlined code listed under its header file, without an object: known by its function
    location = entry
    function = location.rsplit(":", 1)[-1]
    if function.startswith("CPy") or "/mypyc/lib-rt/" in location:
        return "compiled"
    if function.startswith("__pyx"):
        return "other"  # (Cython: uvloop, httptools)
    if "/Python-3." in location or "/include/python3." in location:
        return "interpreter"
    if location.startswith("./"):
        return "libc"
    return "other"


def by_where(listing: str) -> dict[str, list[int]]:
    """Each `WHERE_EVENTS` total per `where` from callgrind_annotate's function listing
    (``--show`` of those events, ``--threshold=100``: every function listed)."""
    totals: dict[str, list[int]] = {}
    for line in listing.splitlines():
        match = _LINE.match(line)
        if match is None or "PROGRAM TOTALS" in match.group(2):
            continue
        values = [
            0 if v == "." else int(v.replace(",", "")) for v in _VALUE.findall(match.group(1))
        ]
        row = totals.setdefault(where(match.group(2)), [0] * len(WHERE_EVENTS))
        for i, value in enumerate(values):
            row[i] += value
    return totals


def _listing(out_file: str) -> str:
    proc = subprocess.run(
        [
            "callgrind_annotate", f"--show={','.join(WHERE_EVENTS)}", "--threshold=100",
            "--auto=no", out_file,
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind_annotate failed: {proc.stderr[-500:]}")
    return proc.stdout


def added_by_where(files: dict[tuple[str, int], str], n1: int, n2: int) -> dict[str, Any]:
    """Per `where`, each event the realistic guard adds per request over the bare app."""
    per: dict[str, dict[str, list[float]]] = {}
    for name in SPLIT:
        low, high = by_where(_listing(files[(name, n1)])), by_where(_listing(files[(name, n2)]))
        zero = [0] * len(WHERE_EVENTS)
        per[name] = {
            place: [
                (h - lo) / (n2 - n1)
                for lo, h in zip(low.get(place, zero), high.get(place, zero), strict=True)
            ]
            for place in {*low, *high}
        }
    bare, guard = (per[name] for name in SPLIT)
    zero_f = [0.0] * len(WHERE_EVENTS)
    return {
        place: {
            event: round(g - b, 1)
            for event, g, b in zip(
                WHERE_EVENTS, guard.get(place, zero_f), bare.get(place, zero_f), strict=True
            )
        }
        for place in sorted({*bare, *guard})
    }


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
    split = all(name in names for name in SPLIT)
    with tempfile.TemporaryDirectory(prefix="guard-misses-") as tmp:
        files = {
            job: f"{tmp}/{job[0]}-{job[1]}.out" if split and job[0] in SPLIT else "/dev/null"
            for job in jobs
        }
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            totals = dict(
                zip(
                    jobs,
                    pool.map(
                        lambda job: collect_server(job[0], job[1], files[job], SIMULATE), jobs
                    ),
                    strict=True,
                )
            )
        places = added_by_where(files, args.n1, args.n2) if split else None
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
    if places is not None:
        print("\nwhere the realistic guard's additions happen (per request, over the bare app):")
        for place, figures in places.items():
            shown = "  ".join(f"{e} {figures[e]:+,.0f}" for e in WHERE_EVENTS)
            print(f"  {PLACES.get(place, place):34s} {shown}")
    doc = {
        "benchmark": "guard_misses",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "settings": {
            "n1": args.n1,
            "n2": args.n2,
            "warmup_realistic": REALISTIC_CLIENTS,
            "simulate": list(SIMULATE),
        },
        "variants": rows,
    }
    if places is not None:
        doc["realistic_guard_added_by_where"] = places
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    print(
        "\nmedians over every stored full run (added miss events per request; realistic "
        "variants: runs with the clients' warm-up)"
    )
    for name in rows:
        if rows[name]["added"] is not None:
            print_median(
                f"  {name}",
                stored,
                lambda run, n=name: (
                    run["variants"][n]["added"]["miss_events"]
                    if run["settings"].get("warmup_realistic") or not n.startswith("realistic_")
                    else None
                ),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
