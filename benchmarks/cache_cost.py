"""Server CPU microseconds per cache hit: crisisctl's cache layer, fastapi-cache2, cashews, and the
bare app's handler, side by side, in one run.

The app (`benchmarks/apps/cache_apps.py`) is one FastAPI route, ``GET /items/{item_id}``,
whose handler builds a ~850-byte JSON document. Each variant runs in its own uvicorn process
(uvloop + httptools, one worker, no access log) pinned to core 0 and is loaded by ``wrk``
pinned to core 1, always on ``/items/1``: after the warm-up every request of a cached variant
is a hit, and every request of the bare variant runs the handler; ``floor`` (a raw ASGI app
answering the same bytes) is what uvicorn alone costs, so ``crisisctl - floor`` is what the
layer's hit path adds. The server's CPU time
(utime + stime, psutil) is read around a measured run: CPU µs/request = cpu_seconds × 1e6 /
requests. Rounds are interleaved (each starts at another variant) and the median per variant
is reported, with the minimum as a second opinion (interference only adds CPU time). A run
during which the server used < 85 % of its core, or anything else > 10 % of core 0, is
"disturbed" (the machine is shared) and repeated up to `--retries` times. Every run is
appended to ``benchmarks/results/cache_cost.json`` (`benchmarks/apps/history.py`).

Targets (issue 19): a crisisctl hit costs less CPU than a hit of fastapi-cache2 and of cashews,
and less than the bare app's handler.

Run from the project root: ``.venv/bin/python benchmarks/cache_cost.py [--quick]``. Exits 0
whether or not the targets are met; non-zero only when a variant could not be measured.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cache_cost.json"
APP_MODULE = "benchmarks.apps.cache_apps"
HOST = "127.0.0.1"  # the only address this benchmark ever talks to
PATH = "/items/1"
MIN_SERVER_UTIL = 0.85
MAX_INTERFERENCE = 0.1
RETRY_PAUSE_S = 5.0
VARIANTS = ("floor", "bare", "crisisctl", "fastapi_cache2", "cashews")

sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402
from benchmarks.guard_overhead import (  # noqa: E402
    core_times,
    cpu_model,
    ensure_wrk,
    free_port,
    pinning,
    run_wrk,
    server_env,
    wrk_version,
)


@dataclass
class Run:
    """One measured wrk run against one variant."""

    variant: str
    round: int
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    cpu_us_per_req: float = 0.0
    server_util: float = 0.0
    interference: float = 0.0
    attempt: int = 1
    disturbed: bool = False
    used: bool = False
    valid: bool = False
    error: str | None = None


def start_server(variant: str, pin: bool) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{APP_MODULE}:{variant}_app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--app-dir",
        str(ROOT),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    ]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=server_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{variant} exited with {proc.returncode}: {err[-1500:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
            conn.request("GET", PATH)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"{variant} did not answer within 20 s")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stderr:
        proc.stderr.close()


def measure(variant: str, rnd: int, args: argparse.Namespace, wrk: str, pin: bool) -> Run:
    run = Run(variant=variant, round=rnd)
    try:
        proc, port = start_server(variant, pin)
    except RuntimeError as exc:
        run.error = str(exc)
        return run
    server = psutil.Process(proc.pid)
    try:
        run_wrk(wrk, port, args.warmup, args.connections, pin, args.script)
        time.sleep(0.2)
        core_before = core_times(0)
        times = server.cpu_times()
        before = times.user + times.system
        out = run_wrk(wrk, port, args.duration, args.connections, pin, args.script)
        times = server.cpu_times()
        cpu_s = times.user + times.system - before
        core_after = core_times(0)
        run.requests, run.duration_s = out["requests"], out["duration_s"]
        run.rps = run.requests / run.duration_s if run.duration_s else 0.0
        run.cpu_us_per_req = cpu_s * 1e6 / run.requests if run.requests else 0.0
        run.server_util = cpu_s / run.duration_s if run.duration_s else 0.0
        if pin and run.duration_s:
            run.interference = max(0.0, core_after[0] - core_before[0] - cpu_s) / run.duration_s
        run.disturbed = run.server_util < MIN_SERVER_UTIL or run.interference > MAX_INTERFERENCE
        if run.requests == 0:
            run.error = "wrk completed no request"
        elif out["non_2xx"] or sum(out["socket_errors"].values()):
            run.error = f"{out['non_2xx']} non-2xx, socket errors {out['socket_errors']}"
        run.valid = run.error is None
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        run.error = str(exc)
    finally:
        stop_server(proc)
    return run


def summarize(runs: list[Run]) -> dict[str, dict[str, Any]]:
    med: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        ok = [r.cpu_us_per_req for r in runs if r.variant == name and r.valid and r.used]
        med[name] = {
            "cpu_us_per_req": statistics.median(ok) if ok else None,
            "cpu_us_per_req_min": min(ok) if ok else None,
            "cpu_us_per_req_all_rounds": [round(v, 3) for v in ok],
            "rps": statistics.median(
                r.rps for r in runs if r.variant == name and r.valid and r.used
            )
            if ok
            else None,
        }
    return med


def targets(med: dict[str, dict[str, Any]], key: str = "cpu_us_per_req") -> dict[str, Any]:
    ours = med["crisisctl"][key]
    out: dict[str, Any] = {"crisisctl_hit_us": ours}
    for other in ("fastapi_cache2", "cashews", "bare"):
        theirs = med[other][key]
        out[f"below_{other}"] = None if ours is None or theirs is None else ours < theirs
        out[f"ratio_to_{other}"] = None if ours is None or not theirs else round(ours / theirs, 3)
    return out


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("uvicorn", "fastapi", "starlette", "fastapi-cache2", "cashews", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 3 s")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    wrk = ensure_wrk()
    scripts = tempfile.TemporaryDirectory(prefix="cache-cost-")
    args.script = Path(scripts.name) / "path.lua"
    args.script.write_text(f'wrk.path = "{PATH}"\n')
    pin, why = pinning()
    print(f"cache_cost: {', '.join(VARIANTS)}; {args.rounds} round(s) of {args.duration:.0f} s")
    print(f"pinning: {why}")
    if pin:
        os.sched_setaffinity(0, {1})
    started = time.time()
    runs: list[Run] = []
    for rnd in range(1, args.rounds + 1):
        shift = (rnd - 1) % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            for attempt in range(1, args.retries + 2):
                run = measure(name, rnd, args, wrk, pin)
                run.attempt = attempt
                runs.append(run)
                state = "ok" if run.valid else f"INVALID ({run.error})"
                if run.valid and run.disturbed:
                    state = "disturbed"
                print(f"  round {rnd} {name:<15} {run.rps:>8.0f} req/s "
                      f"{run.cpu_us_per_req:>8.2f} µs/req  util {run.server_util:.2f} "
                      f"others {run.interference:.2f}  {state}")  # fmt: skip
                if not run.disturbed or not run.valid:
                    break
                time.sleep(RETRY_PAUSE_S)
            run.used = True

    med = summarize(runs)
    print(f"\n{'variant':<15} {'req/s':>8} {'CPU µs/req':>11} {'min':>8}  rounds")
    for name, row in med.items():
        print(
            f"{name:<15} {fmt(row['rps'], '.0f'):>8} {fmt(row['cpu_us_per_req']):>11} "
            f"{fmt(row['cpu_us_per_req_min']):>8}  {row['cpu_us_per_req_all_rounds']}"
        )
    floor = med["floor"]["cpu_us_per_req"]
    for name in ("crisisctl", "fastapi_cache2", "cashews", "bare"):
        ours = med[name]["cpu_us_per_req"]
        med[name]["above_floor_us"] = None if ours is None or floor is None else ours - floor
        print(f"{name:<15} above the floor: {fmt(med[name]['above_floor_us'])} µs/request")
    verdict = targets(med)
    verdict_min = targets(med, "cpu_us_per_req_min")
    words = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
    for other in ("fastapi_cache2", "cashews", "bare"):
        print(f"target crisisctl hit < {other}: {words[verdict[f'below_{other}']]} "
              f"(median ratio {fmt(verdict[f'ratio_to_{other}'], '.3f')}, "
              f"by min {fmt(verdict_min[f'ratio_to_{other}'], '.3f')})")  # fmt: skip
    doc = {
        "benchmark": "cache_cost",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "pinned": pin,
            "pinning": why,
            "wrk": wrk_version(wrk),
            "versions": versions(),
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "path": PATH,
            "apps": f"{APP_MODULE}:<variant>_app",
        },
        "rounds": [asdict(r) for r in runs],
        "medians": med,
        "target": {"median": verdict, "by_min": verdict_min},
    }
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    print("\nmedians over every stored full run:")
    for name in VARIANTS:
        print_median(f"  {name} CPU µs per request", stored,
                     lambda run, n=name: run["medians"][n]["cpu_us_per_req"])  # fmt: skip
    scripts.cleanup()
    return 1 if any(r.used and not r.valid for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
