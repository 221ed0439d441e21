"""Instructions per request added by each middleware, counted by callgrind (noise-free).

`guard_overhead.py` measures server CPU µs per request under wrk; on a shared, noisy machine its
round-to-round spread (several µs) is as large as the guard's whole cost. This benchmark is its
noise-free complement: each variant of `benchmarks/apps/overhead_apps.py` is called in-process
(the same ASGI app object uvicorn would serve, with a synthetic GET / scope and no-op
receive/send) N1 and N2 times under `valgrind --tool=callgrind`; the difference of the two
instruction totals divided by N2 − N1 is the instructions one request costs, free of start-up.
Instruction counts repeat exactly whatever else the machine is doing.

The µs figures are instructions converted at this machine's measured rate for the bare app
(instructions per µs of wall time in-process, taken outside valgrind), so they are estimates of
CPU time in the middleware itself; uvicorn's own per-request work is the same for all variants.

Writes benchmarks/results/guard_instructions.json. Run: `.venv/bin/python
benchmarks/guard_instructions.py [--variants bare,guard] [--n1 2000 --n2 12000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "guard_instructions.json"
VARIANTS = {
    "bare": ("bare_app", None),
    "empty_asgi": ("empty_asgi_app", "bare"),
    "guard": ("guard_app", "bare"),
    "guard_metrics_only": ("guard_metrics_only_app", "bare"),
    "guard_plus_ratelimit": ("guard_plus_ratelimit_app", "guard_metrics_only"),
    "guard_plus_concurrency": ("guard_plus_concurrency_app", "guard_metrics_only"),
    "guard_plus_timeout": ("guard_plus_timeout_app", "guard_metrics_only"),
    "guard_plus_breaker": ("guard_plus_breaker_app", "guard_metrics_only"),
    "slowapi": ("slowapi_app", "bare"),
    "bare_fastapi": ("bare_fastapi_app", None),
    "instrumentator": ("instrumentator_app", "bare_fastapi"),
}


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

    # ASGI lifespan is not run: Starlette/FastAPI apps serve requests without it
    for _ in range(n):
        await app(_scope(), receive, send)


def child(attribute: str, n: int) -> None:
    """Run `n` requests through one variant (called inside valgrind)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.apps import overhead_apps

    app = getattr(overhead_apps, attribute)
    asyncio.run(_drive(app, n))


def count(attribute: str, n: int) -> int:
    """Total instructions of a child run of `n` requests."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--child", attribute, str(n),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"callgrind run of {attribute} failed: {proc.stderr[-800:]}")
    return int(match.group(1))


def wall_us_per_request(attribute: str, n: int = 20000) -> float:
    """Best-of-5 in-process wall time per request (no valgrind), µs."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.apps import overhead_apps

    app = getattr(overhead_apps, attribute)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        asyncio.run(_drive(app, n))
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n1", type=int, default=2000)
    parser.add_argument("--n2", type=int, default=12000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts/ensure-system-packages.sh"), "valgrind"], check=True
        )
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    wanted, names = names, []
    for name in wanted:  # baselines (and theirs) are needed for the differences, first
        chain = [name]
        while (base := VARIANTS[chain[-1]][1]) is not None:
            chain.append(base)
        names.extend(n for n in reversed(chain) if n not in names)
    per_request: dict[str, int] = {}
    for name in names:
        attribute = VARIANTS[name][0]
        low, high = count(attribute, args.n1), count(attribute, args.n2)
        per_request[name] = round((high - low) / (args.n2 - args.n1))
        print(f"{name:20s} {per_request[name]:>8d} instructions/request", flush=True)
    rate = per_request["bare"] / wall_us_per_request(VARIANTS["bare"][0])
    rows: dict[str, Any] = {}
    for name in names:
        base = VARIANTS[name][1]
        added = per_request[name] - per_request[base] if base else 0
        rows[name] = {
            "instructions_per_request": per_request[name],
            "baseline": base,
            "added_instructions": added,
            "added_us_estimate": round(added / rate, 3),
        }
    guard_added = rows.get("guard", {}).get("added_us_estimate")
    result = {
        "benchmark": "guard_instructions",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"n1": args.n1, "n2": args.n2, "instructions_per_us": round(rate, 1)},
        "variants": rows,
        "target": {
            "check": "guard added_us_estimate <= 5.0",
            "guard_added_us_estimate": guard_added,
            "pass": guard_added is not None and guard_added <= 5.0,
        },
    }
    print(f"\n{'variant':20s} {'instr/req':>10s} {'added':>8s} {'≈ µs':>7s}")
    for name, row in rows.items():
        print(f"{name:20s} {row['instructions_per_request']:>10d} "
              f"{row['added_instructions']:>8d} {row['added_us_estimate']:>7.2f}")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
