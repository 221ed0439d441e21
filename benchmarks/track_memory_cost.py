"""What `track(memory_every=N)` costs per call: tracemalloc started, measured and stopped for the
sampled calls, one integer test for the others.

A sync function that allocates and drops a list of 100 small dicts (a few kB, about 200
allocations: a typical small operation) is called `--calls` times back to back, wrapped in
nothing, in `track()` without memory sampling, and with ``memory_every`` 1, 10 and 100. CPU
time of the thread (`time.thread_time`) per call, the median of 5 rounds; `added_us` is the
wrapped call's minus the plain call's. Every run is appended to
benchmarks/results/track_memory_cost.json and the medians over all stored full runs are printed.
Run: `.venv/bin/python benchmarks/track_memory_cost.py [--calls 20000] [--quick]`. In-process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crisisctl.guard import track

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "track_memory_cost.json"


def work() -> int:
    items = [{"id": i, "name": "x"} for i in range(100)]
    return len(items)


def variants() -> dict[str, Callable[[], int]]:
    return {
        "plain": work,
        "track": track("bench.track")(work),
        "memory_every_100": track("bench.mem100", memory_every=100)(work),
        "memory_every_10": track("bench.mem10", memory_every=10)(work),
        "memory_every_1": track("bench.mem1", memory_every=1)(work),
    }


def per_call_us(fn: Callable[[], int], calls: int) -> float:
    for _ in range(200):
        fn()
    started = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2000 calls")
    args = parser.parse_args()
    if args.quick:
        args.calls = 2000
    fns = variants()
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(5):  # interleaved rounds: a busy spell hits every variant alike
        for name, fn in fns.items():
            rounds[name].append(per_call_us(fn, args.calls))
    plain = statistics.median(rounds["plain"])
    results: dict[str, Any] = {}
    for name, values in rounds.items():
        us = statistics.median(values)
        results[name] = {"us_per_call": round(us, 3), "added_us": round(us - plain, 3),
                         "rounds": [round(v, 3) for v in values]}  # fmt: skip
    doc = {
        "benchmark": "track_memory_cost",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        "calls": args.calls,
        "results": results,
        "notes": "thread CPU per call of a function building 100 small dicts, median of 5 "
        "interleaved rounds; added_us = minus the plain call",
    }
    print(f"track_memory_cost, {args.calls} calls × 5 rounds:")
    for name, fig in results.items():
        print(f"  {name:<17} {fig['us_per_call']:8.2f} µs/call  added {fig['added_us']:7.2f} µs")
    runs = append_run(args.output, doc, quick=args.quick)
    for name in fns:
        print_median(
            f"{name}: added µs per call",
            runs,
            lambda run, name=name: run["results"][name]["added_us"],
            " µs",
        )


if __name__ == "__main__":
    main()
