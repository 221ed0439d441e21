"""The Python load generators `benchmarks/loadgen_throughput.py` runs, each in its own process.

Run as ``python -m benchmarks.apps.loadgen_clients NAME --url URL --connections N
--duration S [--think S [--exponential]] [--rate R]`` from the project root; it prints one
JSON line:
requests completed, errors, the CPU seconds this process used while it sent (user + sys of
the whole process, `time.process_time`, taken right before the first request and right after
the last, so the interpreter's start and imports are not counted), the wall seconds of that
window, and p50/p99 latency in ms. Every generator runs on uvloop, N connections, until
`duration` has passed, then stops by itself.

* ``crisisctl`` — our engine's closed model (`run_closed`: N users, think time `--think`,
  constant or, with ``--exponential``, exponentially distributed with that mean);
* ``crisisctl_open`` — our engine's open model at `--rate` requests/s on N connections
  (p50/p99 uncorrected, i.e. from the actual send time like wrk's; corrected ones too);
* ``aiohttp`` — N tasks sharing one `aiohttp.ClientSession` limited to N connections;
* ``httpx`` — the same with `httpx.AsyncClient`.

`LOCUSTFILE` is the Locust FastHttpUser file the benchmark writes to a temporary directory:
its event listeners write the same JSON (window from "spawning complete" to "test stop",
Locust's own request count and percentiles) to the path in ``LOADGEN_LOCUST_OUT``.
Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from crisisctl.load.engine import LoadResult, ThinkTime, run_closed, run_open
from crisisctl.load.target import check_loopback_url
from crisisctl.stats import LatencyHistogram

GENERATORS = ("crisisctl", "crisisctl_open", "aiohttp", "httpx")
#: per-request timeout of every generator (s); nothing on loopback should come near it
TIMEOUT_S = 10.0

LOCUSTFILE = '''\
"""Locust FastHttpUser for benchmarks/loadgen_throughput.py (generated; loopback only)."""

import json
import os
import time

from locust import FastHttpUser, constant, events, task

THINK_S = {think_s!r}
_mark = {{}}


class Hello(FastHttpUser):
    wait_time = constant(THINK_S)

    @task
    def hello(self):
        self.client.get("/")


@events.spawning_complete.add_listener
def _spawned(user_count, **_kwargs):
    # --reset-stats clears the statistics at this same moment: the window starts here
    _mark["cpu"] = time.process_time()
    _mark["wall"] = time.monotonic()


@events.test_stop.add_listener
def _stopped(environment, **_kwargs):
    cpu, wall = time.process_time(), time.monotonic()
    total = environment.stats.total
    out = {{
        "requests": total.num_requests - total.num_failures,
        "errors": total.num_failures,
        "cpu_s": cpu - _mark.get("cpu", cpu),
        "wall_s": wall - _mark.get("wall", wall),
        "p50_ms": total.get_response_time_percentile(0.5) if total.num_requests else None,
        "p99_ms": total.get_response_time_percentile(0.99) if total.num_requests else None,
        "percentiles_rounded": True,
    }}
    with open(os.environ["LOADGEN_LOCUST_OUT"], "w") as fh:
        json.dump(out, fh)
'''


def _summary(
    requests: int, errors: int, cpu_s: float, wall_s: float, hist: LatencyHistogram
) -> dict[str, Any]:
    s = hist.summary()
    return {
        "requests": requests,
        "errors": errors,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "p50_ms": s.p50_ms if hist.count else None,
        "p99_ms": s.p99_ms if hist.count else None,
    }


def _from_result(res: LoadResult, cpu_s: float, wall_s: float) -> dict[str, Any]:
    non_2xx = sum(n for code, n in res.status_counts.items() if not 200 <= code < 300)
    out = _summary(res.completed - non_2xx, res.error_total + non_2xx, cpu_s, wall_s, res.latency)
    if res.latency_uncorrected is not None:
        corrected = res.latency.summary()
        raw = res.latency_uncorrected.summary()
        out.update(
            p50_ms=raw.p50_ms,
            p99_ms=raw.p99_ms,
            corrected_p50_ms=corrected.p50_ms,
            corrected_p99_ms=corrected.p99_ms,
            dropped=res.dropped,
            late_starts=res.late_starts,
        )
    out["connects"] = res.connects
    return out


async def _crisisctl(args: argparse.Namespace) -> dict[str, Any]:
    think = ThinkTime("exponential" if args.exponential else "constant", args.think)
    cpu0, sys0, wall0 = time.process_time(), os.times().system, time.monotonic()
    res = await run_closed(
        args.url, users=args.connections, duration_s=args.duration, think=think, timeout_s=TIMEOUT_S
    )
    out = _from_result(res, time.process_time() - cpu0, time.monotonic() - wall0)
    out["sys_s"] = os.times().system - sys0
    return out


async def _crisisctl_open(args: argparse.Namespace) -> dict[str, Any]:
    if args.rate <= 0:
        raise SystemExit("crisisctl_open needs --rate > 0")
    cpu0, sys0, wall0 = time.process_time(), os.times().system, time.monotonic()
    res = await run_open(
        args.url,
        rate=args.rate,
        duration_s=args.duration,
        connections=args.connections,
        timeout_s=TIMEOUT_S,
    )
    out = _from_result(res, time.process_time() - cpu0, time.monotonic() - wall0)
    out["sys_s"] = os.times().system - sys0
    return out


async def _closed_loop(
    args: argparse.Namespace, one: Callable[[], Awaitable[int]]
) -> dict[str, Any]:
    """N tasks calling `one()` (returns the status) back to back until the duration is over."""
    hist = LatencyHistogram()
    counts = {"ok": 0, "errors": 0}
    cpu0, sys0, wall0 = time.process_time(), os.times().system, time.monotonic()
    stop_at = wall0 + args.duration

    async def worker() -> None:
        while (start := time.monotonic()) < stop_at:
            try:
                status = await one()
            except Exception:
                counts["errors"] += 1
                continue
            if 200 <= status < 300:
                hist.record_us(int((time.monotonic() - start) * 1_000_000))
                counts["ok"] += 1
            else:
                counts["errors"] += 1
            if args.think > 0:
                await asyncio.sleep(args.think)

    await asyncio.gather(*(worker() for _ in range(args.connections)))
    out = _summary(
        counts["ok"],
        counts["errors"],
        time.process_time() - cpu0,
        time.monotonic() - wall0,
        hist,
    )
    out["sys_s"] = os.times().system - sys0
    return out


async def _aiohttp(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> int:
            async with session.get(args.url) as response:
                await response.read()
                return response.status

        return await _closed_loop(args, one)


async def _httpx(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT_S, trust_env=False) as client:

        async def one() -> int:
            response = await client.get(args.url)
            return response.status_code

        return await _closed_loop(args, one)


DRIVERS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "crisisctl": _crisisctl,
    "crisisctl_open": _crisisctl_open,
    "aiohttp": _aiohttp,
    "httpx": _httpx,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", choices=GENERATORS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--think", type=float, default=0.0, help="pause after each response (s)")
    parser.add_argument(
        "--exponential", action="store_true", help="crisisctl: exponential think, mean --think"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="crisisctl_open: requests/s")
    args = parser.parse_args(argv)
    try:
        check_loopback_url(args.url, tool="loadgen_clients")
    except ValueError as exc:
        parser.error(str(exc))
    if args.connections < 1 or args.duration <= 0 or args.think < 0:
        parser.error("--connections ≥ 1, --duration > 0 and --think ≥ 0 are required")
    result = uvloop.run(DRIVERS[args.generator](args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
