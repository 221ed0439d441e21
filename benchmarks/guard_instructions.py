"""Server instructions per request added by each middleware, counted by callgrind (noise-free).

`guard_overhead.py` measures server CPU µs per request under wrk; on a shared, noisy machine its
round-to-round spread (several µs) is as large as the guard's whole cost. This benchmark is its
noise-free complement. Each variant of `benchmarks/apps/overhead_apps.py` is served by the same
uvicorn command as in `guard_overhead.py` (uvloop, httptools, one worker), run under
``valgrind --tool=callgrind``, and sent N1 and then, in a second server, N2 sequential GET /
requests over one keep-alive connection on 127.0.0.1. The difference of the two instruction
totals divided by N2 − N1 is what one request costs the server process in user space — the
app, the middleware and uvicorn's handling of what the middleware changes (extra response
headers are parsed and validated by uvicorn) — free of start-up and shutdown. Counts repeat to
within a few hundred instructions whatever else the machine is doing (PYTHONHASHSEED is fixed).

Instructions are not µs, so the figures are turned into µs the only machine-independent way:
as a share of what slowapi and prometheus-fastapi-instrumentator add, times what the issue
measured for them on its reference machine (57 µs and 46 µs). ``--where inprocess`` instead
calls the ASGI app in-process with no-op receive/send (the middleware alone, no server).

The ``realistic_*`` variants (`benchmarks/apps/realistic_app.py`: 50 routes with path
parameters, 1,000 clients behind a trusted proxy, two stacked limits, RateLimit headers) are
sent the cycle of that app's requests instead of ``GET /``, after a warm-up of one request from
each client (`warmup_of`: the counted requests are from clients the guard has met, as under
load); ``realistic_guard_no_*`` and
``realistic_guard_one_limit`` remove one part of that guard each, to price the parts. A
per-function profile (on by default, ``--no-profile`` skips it) shows where the
guard's instructions go on the realistic app: callgrind keeps its per-function counts for the
N1 and N2 runs of ``realistic_bare`` and ``realistic_guard``; per function, (count at N2 −
count at N1) / (N2 − N1) is its self cost per request, and the guard's minus the bare app's
is what the guard adds in that function. The guard's compiled request path (mypyc) shows
under its own C names (``CPyDef_…``); Python code it runs (its own pure-Python modules,
uvicorn's handling of the extra headers) shows as interpreter functions
(``_PyEval_EvalFrameDefault``, dict and string primitives), so the guard's compiled functions
are also listed with their inclusive cost (what they call included): route labelling, the
rate-limit step, the header building.

Every run is appended to benchmarks/results/guard_instructions.json (a list of runs; counts
repeat, but the rule is the same for every benchmark: the median over all stored full runs
is printed). Run: `.venv/bin/python benchmarks/guard_instructions.py [--variants bare,guard]
[--n1 500 --n2 3500] [--jobs 2] [--no-profile] [--quick]`. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "guard_instructions.json"
HOST = "127.0.0.1"  # the only address this benchmark ever talks to
TARGET_GUARD_ADDED_US = 5.0
#: what the issue measured on its reference machine, µs added per request
REFERENCE_ADDED_US = {"slowapi": 57.0, "instrumentator": 46.0}

sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402
from benchmarks.apps.overhead_apps import REALISTIC, VARIANT_ENV, VARIANTS  # noqa: E402
from benchmarks.apps.realistic_app import CLIENTS as REALISTIC_CLIENTS  # noqa: E402
from benchmarks.apps.realistic_app import requests as realistic_requests  # noqa: E402

DEFAULT_VARIANTS = (
    "bare",
    "empty_asgi",
    "guard",
    "guard_pure",
    "guard_no_rate_headers",
    "guard_metrics_only",
    "guard_plus_ratelimit",
    "guard_plus_concurrency",
    "guard_plus_timeout",
    "guard_plus_breaker",
    "slowapi",
    "bare_fastapi",
    "instrumentator",
    "realistic_bare",
    "realistic_guard",
    "realistic_slowapi",
    "realistic_guard_no_routes",
    "realistic_guard_no_proxy",
    "realistic_guard_one_limit",
    "realistic_guard_no_headers",
)
PROFILED = ("realistic_bare", "realistic_guard")
#: the per-policy variants are compared with metrics-only, the others with their bare app
BASELINE_OVERRIDE = {
    name: "guard_metrics_only"
    for name in (
        "guard_plus_ratelimit",
        "guard_plus_concurrency",
        "guard_plus_timeout",
        "guard_plus_breaker",
    )
}


def baseline_of(name: str) -> str | None:
    base = BASELINE_OVERRIDE.get(name, VARIANTS[name][2])
    return None if base == name else base


def variant_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRISISCTL_PURE_PYTHON", None)
    env.update(VARIANT_ENV.get(name, {}))
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


# -- in a real server -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _connect(
    port: int, proc: subprocess.Popen[str], timeout_s: float
) -> http.client.HTTPConnection:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.communicate()[1][-800:]}")
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return conn
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def request_cycle(name: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The requests a variant is sent, in order, round and round: (path, headers)."""
    if name in REALISTIC:
        cycle = [(path, {"X-Forwarded-For": ip}) for path, ip in realistic_requests()]
    else:
        cycle = [("/", {})]
    while True:
        yield from cycle


def warmup_of(name: str) -> int:
    """Requests a variant's server gets before the N counted ones: one from each client of the
    realistic app (the cycle's first 1,000 requests visit every client once), none otherwise.

    A client's first response carries ``RateLimit-Policy`` beside ``RateLimit`` (the guard's
    default ``rate_limit_policy_header="first"``), a second header line for uvicorn to check. In
    a loaded server that is about one response in a thousand (again once per longest limit
    period); in N2 − N1 requests from a cold server it was one in six, so the figure carried
    the announcements, not the steady state that `guard_overhead.py` measures under wrk.
    The warm-up is in both servers' totals, so it cancels in their difference."""
    return REALISTIC_CLIENTS if name in REALISTIC else 0


def ensure_valgrind() -> None:
    """Install valgrind with the project's script when it is missing."""
    if shutil.which("valgrind") is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts/ensure-system-packages.sh"), "valgrind"], check=True
        )


def count_server(name: str, n: int, out_file: str = "/dev/null") -> int:
    """Total user-space instructions of a uvicorn server (under callgrind) that served n + 1;
    callgrind's per-function counts go to `out_file`."""
    return collect_server(name, n, out_file)[0]


def collect_server(
    name: str, n: int, out_file: str = "/dev/null", simulate: tuple[str, ...] = ()
) -> list[int]:
    """Callgrind's event totals (instructions first, then those `simulate` adds, e.g.
    ``--cache-sim=yes``) of a uvicorn server that served n + 1 requests."""
    port = free_port()
    command = [
        "valgrind", "--tool=callgrind", *simulate, f"--callgrind-out-file={out_file}",
        sys.executable, "-m", "uvicorn", f"benchmarks.apps.overhead_apps:{VARIANTS[name][0]}",
        "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--lifespan", "on",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=variant_env(name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn = _connect(port, proc, timeout_s=180)
        cycle = request_cycle(name)
        for _ in range(warmup_of(name) + n):
            path, headers = next(cycle)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{name} answered {response.status}")
        conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    match = re.search(r"Collected : ([\d ]+)", err)
    if not match:
        raise RuntimeError(f"callgrind run of {name} failed: {err[-800:]}")
    return [int(value) for value in match.group(1).split()]


# -- in-process -----------------------------------------------------------------------------
def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _drive(app: Any, n: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for _ in range(n):  # ASGI lifespan is not run: these apps serve requests without it
        await app(_scope(), receive, send)


def child(attribute: str, n: int) -> None:
    """Run `n` requests through one variant in-process (called inside valgrind)."""
    from benchmarks.apps import overhead_apps

    asyncio.run(_drive(getattr(overhead_apps, attribute), n))


def count_inprocess(name: str, n: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--child", VARIANTS[name][0], str(n),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=ROOT, env=variant_env(name)
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"callgrind run of {name} failed: {proc.stderr[-800:]}")
    return int(match.group(1))


# -- where the instructions go ----------------------------------------------------------------
_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$")


def per_function(out_file: str, inclusive: bool = False) -> dict[str, int]:
    """Self (or inclusive) instructions per function of a callgrind output file."""
    mode = "--inclusive=yes" if inclusive else "--inclusive=no"
    proc = subprocess.run(
        ["callgrind_annotate", mode, "--threshold=100", "--auto=no", out_file],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind_annotate failed: {proc.stderr[-500:]}")
    return parse_annotate(proc.stdout, inclusive)


def parse_annotate(text: str, inclusive: bool = False) -> dict[str, int]:
    """Instructions per function from callgrind_annotate's function listing."""
    counts: dict[str, int] = {}
    listing = False
    for line in text.splitlines():
        if "file:function" in line:
            listing = True
            continue
        if listing and not line.strip() and counts:
            break  # the end of the function listing
        match = _ANNOTATED.match(line) if listing else None
        if match is None:
            continue
        name = _function_name(match.group(2).strip())
        value = int(match.group(1).replace(",", ""))
        # a function listed twice (code inlined from another file): self costs add up, an
        # inclusive cost is the whole function's in its main entry (the larger)
        counts[name] = max(counts.get(name, 0), value) if inclusive else counts.get(name, 0) + value
    return counts


def _function_name(entry: str) -> str:
    """``file:function [object]`` -> ``function``."""
    match = re.match(r"^(?:[^:\s]*:)?(.+?)(?:\s+\[(.*)\])?$", entry)
    return entry if match is None else match.group(1)


def profile(args: argparse.Namespace, pool: ThreadPoolExecutor, top: int = 30) -> dict[str, Any]:
    """Per function, the self instructions per request the guard adds on the realistic app."""
    with tempfile.TemporaryDirectory(prefix="guard-profile-") as tmp:
        jobs = [(name, n, f"{tmp}/{name}-{n}.out") for name in PROFILED for n in (args.n1, args.n2)]
        list(pool.map(lambda job: count_server(*job), jobs))
        counts = {(name, n): per_function(out) for name, n, out in jobs}
        guard_inclusive = [
            per_function(out, inclusive=True) for name, _, out in jobs if name == PROFILED[1]
        ]
    span = args.n2 - args.n1
    per_request = {
        name: {
            fn: (counts[(name, args.n2)].get(fn, 0) - c1) / span
            for fn, c1 in {**counts[(name, args.n2)], **counts[(name, args.n1)]}.items()
        }
        for name in PROFILED
    }
    bare, guard = (per_request[name] for name in PROFILED)
    added = {fn: guard.get(fn, 0.0) - bare.get(fn, 0.0) for fn in {*bare, *guard}}
    rows = sorted(added.items(), key=lambda kv: -kv[1])
    compiled = sum(v for fn, v in added.items() if "CPy" in fn or "__mypyc" in fn)
    total = sum(added.values())
    # the guard's compiled functions, inclusive of what they call (Python code, regexes, …)
    low, high = guard_inclusive
    inclusive = sorted(
        (
            (fn, (high.get(fn, 0) - low.get(fn, 0)) / span)
            for fn in high
            if fn.startswith(("CPyDef_", "CPyPy_")) and "Guard_____call__" not in fn
        ),
        key=lambda kv: -kv[1],
    )
    # the ticker's chores run per second, not per request: under callgrind (~50× slower) a
    # second holds ~50× fewer requests than under load, so its share here is inflated that much
    ticker = max(
        (v for fn, v in inclusive if "ticker____run_Ticker_gen" in fn and "CPyDef_" in fn),
        default=0.0,
    )
    return {
        "variants": list(PROFILED),
        "total_added_per_request": round(total),
        "ticker_per_request": round(ticker),
        "request_path_added_per_request": round(total - ticker),
        "in_compiled_functions": round(compiled),
        "elsewhere": round(total - compiled),
        "top_added_per_request": [
            {"function": fn, "instructions": round(v)} for fn, v in rows[:top]
        ],
        "guard_functions_inclusive_per_request": [
            {"function": fn, "instructions": round(v)} for fn, v in inclusive[:top] if v >= 50
        ],
        "top_saved_per_request": [
            {"function": fn, "instructions": round(v)} for fn, v in rows[::-1][:10] if v < 0
        ],
    }


def print_profile(prof: dict[str, Any]) -> None:
    print(
        f"\nwhere the guard's instructions go on the realistic app (self instructions per request, "
        f"{prof['variants'][1]} − {prof['variants'][0]}): total {prof['total_added_per_request']}, "
        f"in compiled (mypyc) functions {prof['in_compiled_functions']}, elsewhere "
        f"{prof['elsewhere']}"
    )
    if "ticker_per_request" in prof:
        print(
            f"  of which the ticker (time-driven work, inflated by callgrind's slowness) "
            f"{prof['ticker_per_request']}: the request path adds "
            f"{prof['request_path_added_per_request']}"
        )
    for row in prof["top_added_per_request"]:
        print(f"  {row['instructions']:>8d}  {row['function']}")
    print("the guard's compiled functions, inclusive of what they call, per request:")
    for row in prof["guard_functions_inclusive_per_request"]:
        print(f"  {row['instructions']:>8d}  {row['function']}")


# -- main -----------------------------------------------------------------------------------
def with_baselines(wanted: list[str]) -> list[str]:
    names: list[str] = []
    for name in wanted:  # baselines (and theirs) first, so every difference can be computed
        chain = [name]
        while (base := baseline_of(chain[-1])) is not None:
            chain.append(base)
        names.extend(n for n in reversed(chain) if n not in names)
    return names


def report(per_request: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, instructions in per_request.items():
        base = baseline_of(name)
        rows[name] = {
            "instructions_per_request": instructions,
            "baseline": base,
            "added_instructions": instructions - per_request[base] if base else 0,
        }
    for row in rows.values():
        for peer, reference_us in REFERENCE_ADDED_US.items():
            peer_added = rows.get(peer, {}).get("added_instructions")
            row[f"share_of_{peer}"] = (
                round(row["added_instructions"] / peer_added, 4) if peer_added else None
            )
            row[f"reference_us_by_{peer}"] = (
                round(row["added_instructions"] / peer_added * reference_us, 2)
                if peer_added
                else None
            )
    guard = rows.get("guard", {})
    scaled = [v for k, v in guard.items() if k.startswith("reference_us_by_") and v is not None]
    return {
        "benchmark": "guard_instructions",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "where": args.where,
            "n1": args.n1,
            "n2": args.n2,
            "warmup_realistic": REALISTIC_CLIENTS,
            "server": "uvicorn --loop uvloop --http httptools --no-access-log, 1 worker",
            "reference_added_us": REFERENCE_ADDED_US,
        },
        "variants": rows,
        "target": {
            "check": "guard's added instructions, as a share of slowapi's and the "
            "instrumentator's, in µs of the issue's reference machine: the larger <= 5.0",
            "guard_reference_us": max(scaled) if scaled else None,
            "pass": bool(scaled) and max(scaled) <= TARGET_GUARD_ADDED_US,
        },
    }


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--where", choices=("server", "inprocess"), default="server")
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=3500)
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the per-function view of the realistic app's guard (4 more callgrind runs)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: N1 200, N2 700")
    args = parser.parse_args()
    if args.quick:
        args.n1, args.n2 = 200, 700
    if args.n2 <= args.n1 or args.n1 < 1:
        parser.error("need 1 <= --n1 < --n2")
    ensure_valgrind()
    wanted = [v for v in args.variants.split(",") if v]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    names = with_baselines(wanted)
    count = count_server if args.where == "server" else count_inprocess
    jobs = [(name, n) for name in names for n in (args.n1, args.n2)]
    started = time.time()
    print(f"guard_instructions ({args.where}): {len(jobs)} callgrind runs, {args.jobs} at once")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        totals = dict(zip(jobs, pool.map(lambda job: count(*job), jobs), strict=True))
        prof = profile(args, pool) if args.profile else None
    per_request = {
        name: round((totals[(name, args.n2)] - totals[(name, args.n1)]) / (args.n2 - args.n1))
        for name in names
    }
    result = report(per_request, args)
    print(f"\n{'variant':24s} {'instr/req':>10s} {'added':>8s} {'vs':>20s} {'ref µs':>7s}")
    for name, row in result["variants"].items():
        ref = row.get("reference_us_by_slowapi")
        print(
            f"{name:24s} {row['instructions_per_request']:>10d} {row['added_instructions']:>8d} "
            f"{row['baseline'] or '':>20s} {'' if ref is None else f'{ref:7.2f}':>7s}"
        )
    target = result["target"]
    verdict = "PASS" if target["pass"] else "FAIL"
    print(f"\ntarget (guard ≤ 5 µs on the reference machine): {verdict}, "
          f"≈ {target['guard_reference_us']} µs")  # fmt: skip
    realistic = result["variants"].get("realistic_guard")
    slowapi = result["variants"].get("realistic_slowapi")
    if realistic is not None:
        result["realistic"] = {
            "guard_added_instructions": realistic["added_instructions"],
            "slowapi_added_instructions": slowapi["added_instructions"] if slowapi else None,
        }
        print(
            f"realistic app: the guard adds {realistic['added_instructions']} instructions per "
            f"request, slowapi {slowapi['added_instructions'] if slowapi else '—'}"
        )
    if prof is not None:
        result["profile"] = prof
        print_profile(prof)
    result["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    stored = append_run(args.output, result, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    print("\nmedians over every stored full run:")
    for name in ("guard", "realistic_guard", "realistic_slowapi"):
        warmed = " (runs with the clients' warm-up)" if name in REALISTIC else ""
        print_median(
            f"  {name} added instructions/request{warmed}",
            stored,
            lambda run, n=name: (
                run["variants"][n]["added_instructions"]
                if n not in REALISTIC or run["settings"].get("warmup_realistic")
                else None
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
