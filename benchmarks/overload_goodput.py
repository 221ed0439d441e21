"""Goodput of a fixed-capacity service driven open-loop at 3× its capacity: the guard and its peers.

The service is `benchmarks/apps/capacity_app.py` (one worker: ``GET /work`` burns ~5 ms of CPU,
capacity ≈ 200 req/s). It runs in a uvicorn subprocess pinned to core 0; the load comes from
crisisctl's load engine in this process, pinned to core 1 (`run_open` for the unloaded
latency, `run_closed` for the capacity, and the engine's `HttpClient` for the overload, which
needs each response's status, route and corrected latency: `goodput_tools.drive_overload`).

Variants (each on a fresh server): ``unguarded`` (the collapse), ``guarded`` (``Guard(app)``
with the default GuardConfig), and the peers a user would pick instead: ``semaphore`` (a
static semaphore tried without waiting, 503 over N in flight) and ``uvicorn_limit``
(``uvicorn --limit-concurrency N``). Each peer's N is **tuned** first: every N of its grid
runs the ``constant`` workload for a few seconds and the N with the highest goodput is kept
for every workload (a static setting tuned on one workload, as a user would).

Workloads (`benchmarks/apps/goodput_workloads.py`): ``constant`` (the one the guard was tuned
on), ``poisson`` arrivals, a ``bimodal`` service time (1 ms / 50 ms), and ``two_route`` (``/a``
on the CPU worker, ``/b`` on a dependency of its own that turns slow half-way). Per workload
and round: the bare service's capacity (closed loop) and unloaded latency (open loop at 40
req/s, or a fifth of the capacity when that is lower) per route and phase; then each variant:
the same unloaded warm-up, then the offered load (3× the capacity of the first route) for
``--duration`` seconds with 256 connections and a 10 s timeout; for one-route workloads the
capacity is measured again after the run and the mean of before and after is used (the
machine's speed drifts).

Goodput counts 2xx responses whose corrected latency is at most 2× their route's unloaded
p99 (in that phase; the lower of the bare server's and the variant's warm-up for phase 0: a
stall of the shared host only ever adds latency), per second, against the workload's
effective capacity. Targets, for the guard on every workload: goodput ≥ 90 % and admitted p99
≤ 2× unloaded p99 (the worst route and phase), judged on the median round.

Every run is appended to ``benchmarks/results/overload_goodput.json`` (a list of runs); the
medians over every stored full run are printed at the end (the figures to report).
Run from the project root: ``.venv/bin/python benchmarks/overload_goodput.py [--quick]
[--workloads constant,poisson] [--variants guarded,semaphore]``. A full run takes about 12
minutes. Exits 0 whether or not targets are met, non-zero only when a step could not run.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "overload_goodput.json"
SERVER_CORE, LOAD_CORE = 0, 1

sys.path.insert(0, str(ROOT))
try:
    import crisisctl.load  # noqa: F401
except ImportError:  # not installed (editable) yet: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from benchmarks.apps.capacity_app import calibrate_iters, time_burn  # noqa: E402
from benchmarks.apps.goodput_tools import (  # noqa: E402
    VARIANTS,
    Server,
    closed_loop,
    drive_overload,
    on_uvloop,
    unloaded,
)
from benchmarks.apps.goodput_workloads import (  # noqa: E402
    WORKLOADS,
    Goodput,
    Workload,
    effective_capacity,
)
from benchmarks.apps.history import append_run, print_median  # noqa: E402

#: the N each peer is tuned over (uvicorn counts open connections too: see docs/benchmarks.md)
TUNING_GRID = {"semaphore": (1, 2, 3, 4, 6, 8), "uvicorn_limit": (4, 64, 300)}
QUICK_GRID = {"semaphore": (1, 2, 4), "uvicorn_limit": (16, 300)}
#: unguarded is the collapse: shown on the workload the guard was tuned on only (it costs a
#: 10 s drain per run); --variants can add it elsewhere
DEFAULT_VARIANTS = ("unguarded", "guarded", "semaphore", "uvicorn_limit")
UNGUARDED_ON = ("constant",)
Key = tuple[int, int]


# -- environment ----------------------------------------------------------------------------
def pinning() -> tuple[bool, str]:
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return False, "taskset (util-linux) is missing: running unpinned"
    if SERVER_CORE not in cores or LOAD_CORE not in cores:
        return False, f"fewer than 2 usable cores ({cores}): running unpinned"
    return True, f"server on core {SERVER_CORE}, load generator on core {LOAD_CORE}"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("uvicorn", "starlette", "uvloop", "httptools", "crisisctl"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# -- measurements ---------------------------------------------------------------------------
def unloaded_rate(capacity: float) -> float:
    """The rate unloaded latency is measured at: 40 req/s, at most a fifth of the capacity."""
    return max(1.0, min(40.0, capacity / 5))


class Bench:
    """The settings of one benchmark run and the servers it starts."""

    def __init__(self, args: argparse.Namespace, iters: int, pin: bool) -> None:
        self.args = args
        self.iters = iters
        self.core = SERVER_CORE if pin else None
        self.limits: dict[str, int] = {}

    def server(self, variant: str) -> Server:
        server = Server(
            variant,
            self.iters,
            self.core,
            work_ms=self.args.work_ms,
            limit=self.limits.get(variant),
        )
        server.wait_ready(self.iters)
        return server

    def latency_p99(
        self, server: Server, w: Workload, rates: dict[int, float]
    ) -> dict[int, dict[str, Any]]:
        """Unloaded latency of each route of `w` on `server` at its rate in `rates`."""
        return {
            r: unloaded(server.url(path), rates[r], self.args.unloaded_s)
            for r, path in enumerate(w.paths)
        }

    def capacity(self, server: Server, w: Workload) -> dict[int, dict[str, Any]]:
        """Closed-loop capacity of each route: the higher of 1 user and the saturating count."""
        out = {}
        for r, path in enumerate(w.paths):
            one = closed_loop(server.url(path), self.args.capacity_s, 1)
            many = closed_loop(server.url(path), self.args.capacity_s, w.capacity_users[r])
            out[r] = {"closed_loop_1": one, "closed_loop_n": many}
            out[r]["capacity"] = max(one["throughput"], many["throughput"])
        return out

    def baseline(self, w: Workload) -> dict[str, Any]:
        """The bare service's unloaded p99 and capacity per (route, phase)."""
        server = self.server("unguarded")
        unl: dict[Key, dict[str, Any]] = {}
        cap: dict[Key, dict[str, Any]] = {}
        try:
            closed_loop(server.url(w.paths[0]), 1.0, 1)  # warm-up
            for phase in w.phases:
                if phase == 1:
                    server.turn_slow()
                    time.sleep(0.2)
                for r, row in self.capacity(server, w).items():
                    cap[(r, phase)] = row
                # unloaded: 40 req/s, or a fifth of a route's capacity when that is lower
                rates = {r: unloaded_rate(cap[(r, phase)]["capacity"]) for r in range(len(w.paths))}
                for r, row in self.latency_p99(server, w, rates).items():
                    unl[(r, phase)] = row
        finally:
            server.stop()
        return {"unloaded": unl, "capacity": cap}

    def capacity_after(self, w: Workload) -> float:
        server = self.server("unguarded")
        try:
            closed_loop(server.url(w.paths[0]), 0.5, 4)  # warm-up
            return float(self.capacity(server, w)[0]["capacity"])
        finally:
            server.stop()

    def overload(
        self,
        server: Server,
        w: Workload,
        rate: float,
        seconds: float,
        thresholds_s: dict[Key, float],
        eff_capacity: float,
    ) -> dict[str, Any]:
        counter = Goodput(w, thresholds_s, seconds, drain_s=10.0)
        events = [(w.switch_at(seconds), server.turn_slow)] if w.turn_slow else []
        arrivals = w.arrivals(rate, seconds, seed=self.args.seed)
        me = psutil.Process()
        gen_before = sum(me.cpu_times()[:2])
        cpu_before = server.cpu_seconds()
        counter.t0 = time.monotonic()
        res = on_uvloop(
            drive_overload(
                server.base, w.paths, arrivals, duration_s=seconds,
                connections=self.args.connections, timeout_s=10.0, on_response=counter,
                events=events,
            )
        )  # fmt: skip
        server_cpu = server.cpu_seconds() - cpu_before
        gen_cpu = sum(me.cpu_times()[:2]) - gen_before
        goodput = counter.good_in_schedule / seconds
        whole = int(seconds)
        steady = counter.bins[3:whole] if whole > 4 else counter.bins[:whole]
        admitted = {}
        worst = None
        for (route, phase), hist in counter.admitted.items():
            if not hist.count:
                continue
            p99 = hist.summary().p99_ms
            ratio = p99 / (thresholds_s[(route, phase)] * 1000)
            admitted[f"{w.paths[route]}#{phase}"] = {
                "count": hist.count,
                "p50_ms": hist.summary().p50_ms,
                "p99_ms": p99,
                "limit_ms": round(thresholds_s[(route, phase)] * 1000, 3),
                "p99_ratio_to_limit": round(ratio, 3),
            }
            worst = ratio if worst is None else max(worst, ratio)
        adm = res.by_class.get("2xx")
        return {
            "offered_rate": rate,
            "duration_s": seconds,
            "connections": self.args.connections,
            "intended": res.intended,
            "sent": res.sent,
            "unsent_backlog": res.unsent,
            "completed": res.completed,
            "throughput": counter.done_in_schedule / seconds,
            "throughput_2xx": counter.ok_in_schedule / seconds,
            "goodput": goodput,
            "effective_capacity": eff_capacity,
            "goodput_pct_capacity": 100.0 * goodput / eff_capacity,
            "goodput_steady_pct_capacity": (
                100.0 * sum(steady) / len(steady) / eff_capacity if steady else 0.0
            ),
            "good_total": counter.good,
            "admitted": res.ok,
            "admitted_p50_ms": adm.summary().p50_ms if adm else None,
            "admitted_p99_ms": adm.summary().p99_ms if adm else None,
            "admitted_by_route_phase": admitted,
            "worst_p99_ratio_to_limit": None if worst is None else round(worst, 3),
            "shed_503": res.status_counts.get(503, 0),
            "rejected_429": res.status_counts.get(429, 0),
            "errors": dict(res.errors),
            "timeouts": res.errors["timeout"],
            "late_starts": res.late_starts,
            "server_cpu_util": round(server_cpu / res.elapsed_s, 3) if res.elapsed_s else None,
            "generator_cpu_s": round(gen_cpu, 3),
            "goodput_per_second": counter.series(),
            "result": res.as_dict(),
        }

    def variant_run(
        self, name: str, w: Workload, base: dict[str, Any], rate: float, seconds: float
    ) -> dict[str, Any]:
        """A fresh server of `name`: unloaded warm-up, then the overload of workload `w`."""
        unl, cap = base["unloaded"], base["capacity"]
        capacity = {key: row["capacity"] for key, row in cap.items()}
        server = self.server(name)
        try:
            rates = {r: unloaded_rate(cap[(r, 0)]["capacity"]) for r in range(len(w.paths))}
            warm = self.latency_p99(server, w, rates)
            thresholds = {}
            for (route, phase), row in unl.items():
                p99 = row["latency"]["p99"]
                if phase == 0:  # a stall of the host only ever adds latency: the lower one
                    p99 = min(p99, warm[route]["latency"]["p99"])
                thresholds[(route, phase)] = 2.0 * p99 / 1000
            eff = effective_capacity(w, rate, capacity)
            run = self.overload(server, w, rate, seconds, thresholds, eff)
            run["limit"] = self.limits.get(name)
            if name.startswith("guarded"):
                run["guard_status_after"] = server.guard_status()
        finally:
            server.stop()
        if len(w.paths) == 1 and not self.args.no_recapacity:
            after = self.capacity_after(w)
            local = (capacity[(0, 0)] + after) / 2
            run["capacity_after"] = after
            run["effective_capacity"] = local
            run["goodput_pct_capacity"] = 100.0 * run["goodput"] / local
        return run


# -- tuning, rounds, verdicts -----------------------------------------------------------------
def tune(bench: Bench, grid: dict[str, tuple[int, ...]], seconds: float) -> dict[str, Any]:
    """Each peer's N: the highest goodput on the constant workload (ties: the smaller N)."""
    w = WORKLOADS["constant"]
    base = bench.baseline(w)
    recapacity, bench.args.no_recapacity = bench.args.no_recapacity, True  # short runs only
    rate = bench.args.factor * base["capacity"][(0, 0)]["capacity"]
    out: dict[str, Any] = {}
    for peer, values in grid.items():
        if peer not in bench.args.variant_list:
            continue
        table = []
        for n in values:
            bench.limits[peer] = n
            run = bench.variant_run(peer, w, base, rate, seconds)
            table.append({"limit": n, "goodput_pct": round(run["goodput_pct_capacity"], 2)})
            print(f"  tuning {peer} N={n}: goodput {run['goodput_pct_capacity']:.1f} %")
        best = max(table, key=lambda row: (row["goodput_pct"], -row["limit"]))
        bench.limits[peer] = best["limit"]
        out[peer] = {"grid": table, "chosen": best["limit"]}
        print(f"  {peer}: N = {best['limit']} (goodput {best['goodput_pct']:.1f} %)")
    bench.args.no_recapacity = recapacity
    return out


def one_round(bench: Bench, workloads: list[str]) -> dict[str, Any]:
    args = bench.args
    out: dict[str, Any] = {}
    for wname in workloads:
        w = WORKLOADS[wname]
        base = bench.baseline(w)
        # factor × the first route's capacity (two_route: split between /a and /b)
        rate = args.factor * base["capacity"][(0, 0)]["capacity"]
        desc = ", ".join(
            f"{w.paths[r]}#{ph} p99 {row['latency']['p99']:.2f} ms cap "
            f"{base['capacity'][(r, ph)]['capacity']:.0f}/s"
            for (r, ph), row in base["unloaded"].items()
        )
        print(f"\n{wname}: offered {rate:.0f} req/s for {args.duration:.0f} s; {desc}")
        runs: dict[str, Any] = {}
        for name in args.variant_list:
            if name == "unguarded" and wname not in args.unguarded_on:
                continue
            try:
                run = bench.variant_run(name, w, base, rate, args.duration)
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"  ERROR {name}: {exc}", file=sys.stderr)
                runs[name] = {"error": str(exc)}
                continue
            runs[name] = run
            print(
                f"  {name:<14} N={run['limit'] or '-':<4} goodput {run['goodput']:7.1f}/s = "
                f"{run['goodput_pct_capacity']:5.1f} % of {run['effective_capacity']:.0f}; "
                f"admitted p99 ×{fmt(run['worst_p99_ratio_to_limit'], '.2f')} of its limit; "
                f"503 {run['shed_503']}, timeouts {run['timeouts']}"
            )
        out[wname] = {
            "offered_rate": rate,
            "unloaded": {f"{w.paths[r]}#{ph}": row for (r, ph), row in base["unloaded"].items()},
            "capacity": {f"{w.paths[r]}#{ph}": row for (r, ph), row in base["capacity"].items()},
            "variants": runs,
        }
    return out


def evaluate(rounds: list[dict[str, Any]], workloads: list[str], variants: list[str]) -> Any:
    """Per workload and variant: median over rounds; the guard's targets on each workload."""
    table: dict[str, Any] = {}
    for wname in workloads:
        table[wname] = {}
        for name in variants:
            runs = [
                r[wname]["variants"][name]
                for r in rounds
                if name in r[wname]["variants"] and "error" not in r[wname]["variants"][name]
            ]
            if not runs:
                continue
            pct = statistics.median(run["goodput_pct_capacity"] for run in runs)
            ratios = [run["worst_p99_ratio_to_limit"] for run in runs]
            ratio = statistics.median(v for v in ratios if v is not None) if any(ratios) else None
            row: dict[str, Any] = {
                "goodput_pct": round(pct, 2),
                "per_round_goodput_pct": [round(run["goodput_pct_capacity"], 2) for run in runs],
                "worst_p99_ratio_to_limit": None if ratio is None else round(ratio, 3),
                "per_round_ratio": ratios,
            }
            if name == "guarded":
                row["pass_goodput_ge_90pct"] = pct >= 90.0
                row["pass_p99_le_2x_unloaded"] = ratio is not None and ratio <= 1.0
            table[wname][name] = row
    return table


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def print_summary(table: dict[str, Any]) -> None:
    print("\nmedian over rounds: goodput % of effective capacity / admitted p99 ÷ its limit")
    for wname, rows in table.items():
        cells = [
            f"{name} {row['goodput_pct']:.1f} % / ×{fmt(row['worst_p99_ratio_to_limit'], '.2f')}"
            for name, row in rows.items()
        ]
        verdict = ""
        if "guarded" in rows:
            g = rows["guarded"]
            ok = g["pass_goodput_ge_90pct"] and g["pass_p99_le_2x_unloaded"]
            verdict = "  guard: " + ("PASS" if ok else "FAIL")
        print(f"  {wname:<10} " + "; ".join(cells) + verdict)


def report_medians(stored: list[dict[str, Any]], workloads: list[str]) -> None:
    print("\nmedians over every stored full run (the figures docs/benchmarks.md reports):")
    for wname in workloads:
        for name in ("guarded", "semaphore", "uvicorn_limit"):
            print_median(
                f"  {wname} {name} goodput %",
                stored,
                lambda run, w=wname, n=name: run["summary"][w][n]["goodput_pct"],
            )
    # runs from before the workloads existed stored the constant workload's figure here
    print_median(
        "  constant guarded goodput %, runs of every version",
        stored,
        lambda run: (
            run["summary"]["constant"]["guarded"]["goodput_pct"]
            if "summary" in run
            else run["targets"]["guarded_goodput_ge_90pct_capacity"]["value_pct"]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0, help="overload seconds")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity")
    parser.add_argument("--connections", type=int, default=256, help="generator connections")
    parser.add_argument("--work-ms", type=float, default=5.0, help="service time to calibrate")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma list")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    parser.add_argument("--unguarded-on", default=",".join(UNGUARDED_ON), help="workloads")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; targets use the median")
    parser.add_argument("--tune-s", type=float, default=5.0, help="seconds per tuning run")
    parser.add_argument("--seed", type=int, default=14, help="Poisson arrivals' seed")
    parser.add_argument("--no-recapacity", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, 1 round")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    workloads = [v.strip() for v in args.workloads.split(",") if v.strip()]
    args.unguarded_on = [v.strip() for v in args.unguarded_on.split(",") if v.strip()]
    if any(v not in VARIANTS for v in args.variant_list):
        parser.error(f"variants must be among {', '.join(VARIANTS)}")
    if any(w not in WORKLOADS for w in workloads):
        parser.error(f"workloads must be among {', '.join(WORKLOADS)}")
    args.unloaded_s, args.capacity_s = 3.0, 2.0
    grid = TUNING_GRID
    if args.quick:
        args.duration, args.unloaded_s, args.capacity_s, args.rounds = 5.0, 2.0, 1.5, 1
        args.tune_s, grid, args.no_recapacity = 3.0, QUICK_GRID, True

    pin, why = pinning()
    print(f"overload_goodput: {', '.join(args.variant_list)} on {', '.join(workloads)}; {why}")
    started = time.time()
    if pin:
        os.sched_setaffinity(0, {SERVER_CORE})
    iters = calibrate_iters(args.work_ms)
    burn_ms = time_burn(iters, repeats=15) * 1000
    if pin:
        os.sched_setaffinity(0, {LOAD_CORE})
    print(f"calibration: {iters} PBKDF2 iterations ≈ {burn_ms:.2f} ms on core {SERVER_CORE}")
    bench = Bench(args, iters, pin)
    print("\ntuning the peers on the constant workload")
    tuning = tune(bench, grid, args.tune_s)
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"\n— round {number} of {args.rounds}")
        rounds.append(one_round(bench, workloads))
    summary = evaluate(rounds, workloads, args.variant_list)
    print_summary(summary)
    doc = {
        "benchmark": "overload_goodput",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {
            "cores": os.cpu_count(),
            "usable_cores": sorted(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "pinned": pin,
            "pinning": why,
            "versions": versions(),
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "factor": args.factor,
            "connections": args.connections,
            "timeout_s": 10.0,
            "unloaded_s": args.unloaded_s,
            "capacity_s": args.capacity_s,
            "workloads": workloads,
            "variants": args.variant_list,
            "unguarded_on": args.unguarded_on,
            "tuning_grid": grid,
            "tune_s": args.tune_s,
            "server": "uvicorn --loop uvloop --http httptools --no-access-log, 1 worker",
        },
        "calibration": {"work_iters": iters, "burn_ms": round(burn_ms, 3)},
        "tuning": tuning,
        "rounds": rounds,
        "summary": summary,
        "wall_s": round(time.time() - started, 1),
    }
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored); {doc['wall_s']:.0f} s")
    report_medians(stored, workloads)
    failed = any(
        "error" in run for r in rounds for wl in r.values() for run in wl["variants"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
