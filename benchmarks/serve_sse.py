"""One `serve` process holding 1,000 SSE streams: fan-out latency, CPU and memory.

    python benchmarks/serve_sse.py [--clients 1000] [--rate 5] [--seconds 10] [--runs 3]
                                   [--pad 1500] [--quick]

The server (benchmarks/apps/serve_sse_app.py: the serve app from `create_app`, its event hub
publishing `rate` events per second of ~`pad` bytes, the size of a fleet event) and the
clients (benchmarks/apps/sse_clients.py: raw asyncio sockets on uvloop) are separate
processes on loopback. Per run: the clients connect (all must get their 200), settle 1 s,
then for `seconds` every received event's latency (receive time − publish time, one host's
clock) is recorded; the server's CPU (psutil cpu_times over the same window ÷ wall time, in
% of one core) and RSS are read; the server's connection count is checked with
``/api/debug/connections``. Bounded: about 15 s per run, three runs ≈ 50 s with start-up.

Every run is appended to benchmarks/results/serve_sse.json; the medians over all stored full
runs of the same code (`code`: a fingerprint of the server's modules) and set-up are printed
(never the best). The machine is shared with other work (a busy 2-core
host): the client process competes with the server for CPU, so latencies include its delays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, code_fingerprint, print_median  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serve_sse.json"
TOKEN = "serve-bench-token-0123456789"
APPS = ROOT / "benchmarks" / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, state: Path, rate: float, pad: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SERVE_BENCH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, str(APPS / "serve_sse_app.py"), str(port), str(state), str(rate),
         str(pad)],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/me",
                headers={"Authorization": f"Bearer {TOKEN}"},
                trust_env=False,
                timeout=1.0,
            )
            if answer.status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the serve app did not start within 20 s")


def one_run(port: int, server: psutil.Process, clients: int, seconds: float) -> dict[str, Any]:
    rss_idle = server.memory_info().rss
    proc = subprocess.Popen(
        [sys.executable, str(APPS / "sse_clients.py"), f"http://127.0.0.1:{port}", TOKEN,
         str(clients), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("connected"):
        proc.kill()
        raise SystemExit(f"the clients did not connect: {line!r}")
    time.sleep(1.0)  # the clients' settle second
    open_streams = httpx.get(
        f"http://127.0.0.1:{port}/api/debug/connections",
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
        timeout=10.0,
    ).json()
    cpu0, wall0 = server.cpu_times(), time.monotonic()
    rss_samples = []
    while time.monotonic() - wall0 < seconds - 0.2:
        rss_samples.append(server.memory_info().rss)
        time.sleep(0.5)
    cpu1, wall1 = server.cpu_times(), time.monotonic()
    out, _ = proc.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        **result,
        "server_sse_connections": open_streams["sse_connections"],
        "server_cpu_percent": round(100.0 * used / (wall1 - wall0), 1),
        "server_rss_mb_idle": round(rss_idle / 1e6, 1),
        "server_rss_mb": round(max(rss_samples) / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="events published per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pad", type=int, default=1500, help="bytes of padding per event")
    parser.add_argument("--quick", action="store_true", help="100 clients, 1 run of 3 s")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.runs, args.seconds = 100, 1, 3.0
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        server_proc = start_server(port, Path(state), args.rate, args.pad)
        try:
            server = psutil.Process(server_proc.pid)
            server.cpu_percent()
            runs = []
            for index in range(args.runs):
                run = one_run(port, server, args.clients, args.seconds)
                runs.append(run)
                lat = run["latency_ms"]
                print(
                    f"run {index + 1}: {run['connected']}/{args.clients} streams "
                    f"(server saw {run['server_sse_connections']}), {run['events_received']} "
                    f"events, fan-out p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms, server "
                    f"CPU {run['server_cpu_percent']} %, RSS {run['server_rss_mb']} MB "
                    f"(idle {run['server_rss_mb_idle']} MB), failures {run['failures']}",
                    flush=True,
                )
                time.sleep(1.0)
        finally:
            server_proc.terminate()
            server_proc.wait(timeout=15)
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": code_fingerprint("src/crisisctl/server/*.py", "benchmarks/apps/sse_clients.py"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "note": "a busy shared 2-core machine (other helpers running tests and builds)",
        },
        "clients": args.clients,
        "rate_per_s": args.rate,
        "pad_bytes": args.pad,
        "seconds": args.seconds,
        "runs": runs,
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "server_cpu_percent": statistics.median(r["server_cpu_percent"] for r in runs),
        "server_rss_mb": statistics.median(r["server_rss_mb"] for r in runs),
    }
    stored = append_run(args.output, doc, quick=args.quick)
    # the runs of this code and set-up only (earlier code's runs stay stored as history)
    same = [
        r
        for r in stored
        if (r.get("clients"), r.get("rate_per_s"), r.get("code"))
        == (args.clients, args.rate, doc["code"])
    ]
    print_median("fan-out latency p50", same, lambda r: r["p50_ms"], " ms")
    print_median("fan-out latency p99", same, lambda r: r["p99_ms"], " ms")
    print_median("serve CPU (% of one core)", same, lambda r: r["server_cpu_percent"], " %")
    print_median("serve RSS", same, lambda r: r["server_rss_mb"], " MB")


if __name__ == "__main__":
    main()
