"""What the concurrency-quota check adds per request: memory store and Redis leases.

The quota route of a bare ASGI app (``POST /api/scans``, ``max_concurrent=2``,
``max_concurrent_per_key=1``) is called in-process, one request at a time, through:

  bare          the app alone
  guard         Guard(app) with the same route rule without its quota (the baseline)
  memory        Guard(app) whose route rule has the quota (memory storage)
  redis         the same with storage= a Redis server on 127.0.0.1 (leases in Redis)
  op_memory     Guard(app) whose route rule names an operation quota (``quota="scan"``,
                guard/operations.py) with the same limits, checked at admission (memory)
  op_redis      the same with Redis storage

Each request is admitted and released (the quota is never full; the app does not adopt the
operation slot, so it is released when the request ends), so what is measured is the whole
check: route match, key function, slot bookkeeping, release, service-time update; with
Redis, two script round trips (acquire, release) on one pooled connection. The variants are
interleaved over `--rounds` rounds of `--requests` requests (Redis: a tenth of them) and the
median per variant is kept. Figures per request:

  cpu_us          CPU time of this process (`time.process_time`): the guard's own cost, and
                  for Redis the client's (encoding, parsing, the event loop's socket work)
  wall_us         wall time: with Redis, the two loopback round trips the request waits for
  redis_server_us the Redis server's time in EVALSHA per request (INFO commandstats), only
                  when the benchmark started its own redis-server (no other client counted)

``added`` = variant − guard (what turning the quota on costs a guarded service). On a
shared machine, CPU figures move by ~10-20 % between rounds; compare the variants of one
run. Every run is appended to benchmarks/results/quota_cost.json (see
`benchmarks/apps/history.py`); the run ends with the median over all stored full runs.
Run: `.venv/bin/python benchmarks/quota_cost.py [--rounds 5] [--requests 20000]
[--redis redis://127.0.0.1:6379/15] [--quick]`. Without ``--redis`` a throw-away
redis-server is started on a free loopback port. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from crisisctl._pure import compiled
from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.config import OperationQuota, RouteRule
from crisisctl.guard.quota_store import RedisQuotaStore
from crisisctl.guard.types import Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quota_cost.json"
RULES = [RouteRule("/api/scans", methods=("POST",), max_concurrent=2, max_concurrent_per_key=1)]
OPERATIONS = (OperationQuota("scan", max_concurrent=2, max_concurrent_per_key=1),)
OP_RULES = (RouteRule("/api/scans", methods=("POST",), quota="scan"),)
REDIS_VARIANTS = ("redis", "op_redis")
SCOPE: Scope = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
    "scheme": "http", "path": "/api/scans", "raw_path": b"/api/scans", "query_string": b"",
    "root_path": "", "headers": [(b"host", b"127.0.0.1")],
    "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
}  # fmt: skip
START: Message = {"type": "http.response.start", "status": 200, "headers": []}
BODY: Message = {"type": "http.response.body", "body": b"ok"}


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    await send(START)
    await send(BODY)


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sink:
    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            self.statuses[status] = self.statuses.get(status, 0) + 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, bool]]:
    """(url, own): the given loopback server, or a throw-away one started here."""
    if url is not None:
        host = urlsplit(url.replace("+cluster://", "://")).hostname or ""
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            raise SystemExit(f"--redis must be on loopback (127.0.0.0/8 or ::1), not {host!r}")
        yield url, False
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run `make services` or pass --redis")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 5
            while True:
                probe = redis.Redis(port=port, socket_connect_timeout=0.2)
                try:
                    probe.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the throw-away redis-server did not start") from None
                    time.sleep(0.05)
                finally:
                    probe.close()
            yield f"redis://127.0.0.1:{port}/0", True
        finally:
            proc.kill()
            proc.wait(timeout=5)


def evalsha_usec(url: str) -> tuple[int, int]:
    """(calls, usec) of EVALSHA on the server so far."""
    client = redis.Redis.from_url(url)
    try:
        stats: Any = client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))
    finally:
        client.close()


async def run_variant(app: Any, n: int) -> tuple[float, float]:
    """(cpu µs, wall µs) per request over `n` sequential requests."""
    sink = Sink()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await app(dict(SCOPE), receive, sink)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if sink.statuses != {200: n}:
        raise SystemExit(f"unexpected answers {sink.statuses}: the quota should admit all")
    return cpu / n * 1e6, wall / n * 1e6


async def measure(args: argparse.Namespace, url: str, own: bool) -> dict[str, Any]:
    no_quota = [dataclasses.replace(r, max_concurrent=None, max_concurrent_per_key=None)
                for r in RULES]  # fmt: skip
    shared = GuardConfig(
        routes=tuple(RULES), storage=url, storage_prefix="crisisctl-bench", storage_timeout_s=1.0
    )
    redis_guard = Guard(bare, shared)
    op_shared = dataclasses.replace(shared, routes=OP_RULES, operations=OPERATIONS)
    op_redis_guard = Guard(bare, op_shared)
    stores = []
    for guard in (redis_guard, op_redis_guard):
        assert guard.policy_set is not None
        store = guard.policy_set.quota.store
        assert isinstance(store, RedisQuotaStore)
        stores.append(store)
    apps: dict[str, Any] = {
        "bare": bare,
        "guard": Guard(bare, GuardConfig(routes=tuple(no_quota))),
        "memory": Guard(bare, GuardConfig(routes=tuple(RULES))),
        "redis": redis_guard,
        "op_memory": Guard(bare, GuardConfig(routes=OP_RULES, operations=OPERATIONS)),
        "op_redis": op_redis_guard,
    }
    sizes = {name: args.requests for name in apps}
    for name in REDIS_VARIANTS:
        sizes[name] = max(100, args.requests // 10)
    for name, app in apps.items():  # warm-up: scripts loaded, connection open, caches hot
        await run_variant(app, min(500, sizes[name]))
    samples: dict[str, dict[str, list[float]]] = {
        name: {"cpu_us": [], "wall_us": []} for name in apps
    }
    server_us: dict[str, list[float]] = {name: [] for name in REDIS_VARIANTS}
    for _ in range(args.rounds):
        for name, app in apps.items():
            before = evalsha_usec(url) if name in REDIS_VARIANTS and own else None
            cpu, wall = await run_variant(app, sizes[name])
            samples[name]["cpu_us"].append(cpu)
            samples[name]["wall_us"].append(wall)
            if before is not None:
                calls, usec = evalsha_usec(url)
                if calls - before[0] < 2 * sizes[name]:  # acquire + release (+ the fleet's)
                    raise SystemExit(f"{calls - before[0]} EVALSHA calls, not 2 per request")
                server_us[name].append((usec - before[1]) / sizes[name])
    if any(not store.health.healthy or store.fallback.held for store in stores):
        raise SystemExit("Redis failed during the run: the figures would be the fallback's")
    for app in apps.values():
        if isinstance(app, Guard):
            await app.aclose()
    result: dict[str, Any] = {}
    for name, figures in samples.items():
        result[name] = {k: round(statistics.median(v), 2) for k, v in figures.items()}
        result[name]["spread_cpu_us"] = [round(min(figures["cpu_us"]), 2),
                                         round(max(figures["cpu_us"]), 2)]  # fmt: skip
    for name in ("memory", "redis", "op_memory", "op_redis"):
        result[name]["added_cpu_us"] = round(result[name]["cpu_us"] - result["guard"]["cpu_us"], 2)
        result[name]["added_wall_us"] = round(
            result[name]["wall_us"] - result["guard"]["wall_us"], 2
        )
    for name, server in server_us.items():
        if server:
            result[name]["redis_server_us"] = round(statistics.median(server), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--requests", type=int, default=20000, help="requests per round")
    parser.add_argument("--redis", default=None, help="a loopback Redis URL (default: own)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 rounds of 2,000")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 2000
    with redis_server(args.redis) as (url, own):
        figures = asyncio.run(measure(args, url, own))
    doc = {
        "benchmark": "quota_cost",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "compiled_request_path": compiled(),
        "rounds": args.rounds,
        "requests": args.requests,
        "redis": "own" if args.redis is None else "given",
        "figures": figures,
    }
    for name, row in figures.items():
        print(f"{name:>9}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    runs = append_run(args.output, doc, quick=args.quick)
    for name in ("memory", "redis", "op_memory", "op_redis"):
        # (runs stored before the operation-quota variants have none: skipped)
        have = [r for r in runs if name in r["figures"]]
        for figure in ("added_cpu_us", "added_wall_us"):
            print_median(
                f"{name} {figure}", have, lambda r, n=name, f=figure: r["figures"][n][f], " µs"
            )


if __name__ == "__main__":
    main()
