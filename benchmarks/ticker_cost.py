"""CPU the guard's ticker costs per second with event-loop health and the memory budget on.

Two measurements, both in-process (no network):

  per_tick      `Chores.tick(now, late_s)` called `--ticks` times back to back on a guard that
                has met one route (the chores a quiet service's ticker runs), CPU time of the
                thread (`time.thread_time`) per call, for three configurations:
                  baseline   event-loop health off, no memory budget (the ticker's old work)
                  loop       event-loop health on (the default: lag window, overload check,
                             thread pools looked at once a second)
                  loop_mem   event-loop health on and a memory budget (RSS read every tick from
                             /proc/self/statm; the budget is far above RSS: no cleanup runs)
                `us_per_s` = per-tick µs × the configuration's ticks per second (20 with
                event-loop health on, at its default 50 ms interval; 1 without).
  idle          the guard's real ticker running on a uvloop loop for `--seconds` with nothing
                else to do: process CPU seconds per second (`time.process_time`), with the
                ticker as in each configuration above, and for the same loop without a guard
                (`bare_loop`) and for a loop running only a task that sleeps the same 50 ms in a
                loop (`sleeper`: what the wake-ups themselves cost, kernel and event loop);
                `added_us_per_s` = the configuration's minus the bare loop's.

On a busy shared machine `idle` is noisy (it counts whatever the process does in the
background); `per_tick` is the steadier figure. Every run is appended to
benchmarks/results/ticker_cost.json and the medians over all stored full runs are printed.
Run: `.venv/bin/python benchmarks/ticker_cost.py [--ticks 20000] [--seconds 10] [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from crisisctl._pure import compiled
from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.ticker import tick_interval_s
from crisisctl.guard.types import Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import append_run, print_median  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ticker_cost.json"
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {"event_loop": {"enabled": False}},
    "loop": {},
    "loop_mem": {"memory": {"soft_mb": 1_000_000, "hard_mb": 2_000_000}},
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def one_request(guard: Guard) -> None:
    scope: Scope = {"type": "http", "method": "GET", "path": "/ok", "raw_path": b"/ok",
                    "query_string": b"", "headers": [], "client": ("127.0.0.1", 1)}  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    await guard(scope, receive, send)


async def per_tick_us(config: dict[str, Any], ticks: int) -> float:
    guard = Guard(app, GuardConfig.from_dict(config))
    await one_request(guard)
    await guard.aclose()  # the real ticker stops: only our calls run
    tick = guard._chores.tick
    now = time.monotonic()
    for i in range(200):  # warm-up
        tick(now + i * 0.05, 0.0005)
    started = time.thread_time()
    for i in range(ticks):
        tick(now + 10.0 + i * 0.05, 0.0005)
    return (time.thread_time() - started) / ticks * 1e6


async def _sleeper(interval: float) -> None:
    while True:  # noqa: ASYNC110 (the wake-ups are what is measured)
        await asyncio.sleep(interval)


async def idle_cpu_per_s(
    config: dict[str, Any] | None, seconds: float, sleeper_s: float | None = None
) -> float:
    guard = None
    sleeper = None if sleeper_s is None else asyncio.create_task(_sleeper(sleeper_s))
    if config is not None:
        guard = Guard(app, GuardConfig.from_dict(config))
        await one_request(guard)  # starts the ticker
    await asyncio.sleep(0.5)
    started_cpu, started = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - started_cpu
    elapsed = time.monotonic() - started
    if guard is not None:
        await guard.aclose()
    if sleeper is not None:
        sleeper.cancel()
    return cpu / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2000 ticks, 2 s idle")
    args = parser.parse_args()
    if args.quick:
        args.ticks, args.seconds = 2000, 2.0
    interval = GuardConfig().event_loop.interval_s

    async def run() -> dict[str, Any]:
        per_tick: dict[str, Any] = {}
        for name, config in CONFIGS.items():
            rounds = [await per_tick_us(config, args.ticks) for _ in range(3)]
            us = statistics.median(rounds)
            period = tick_interval_s(GuardConfig.from_dict(config))
            per_tick[name] = {"us_per_tick": round(us, 3), "us_per_s": round(us / period, 1),
                              "rounds": [round(r, 3) for r in rounds]}  # fmt: skip
        bare = await idle_cpu_per_s(None, args.seconds)
        sleeper = await idle_cpu_per_s(None, args.seconds, interval)
        idle: dict[str, Any] = {
            "bare_loop_us_per_s": round(bare * 1e6, 1),
            # a task doing nothing but asyncio.sleep(interval): the wake-ups' own price
            "sleeper_added_us_per_s": round((sleeper - bare) * 1e6, 1),
        }
        for name, config in CONFIGS.items():
            value = await idle_cpu_per_s(config, args.seconds)
            idle[name] = {"us_per_s": round(value * 1e6, 1),
                          "added_us_per_s": round((value - bare) * 1e6, 1)}  # fmt: skip
        return {"per_tick": per_tick, "idle": idle}

    figures = uvloop.run(run())
    doc = {
        "benchmark": "ticker_cost",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        "compiled": compiled(),
        "ticks": args.ticks,
        "idle_seconds": args.seconds,
        "ticks_per_s_with_loop_health": round(1.0 / interval, 1),
        **figures,
        "notes": "per_tick: thread CPU per Chores.tick call; us_per_s at the default 50 ms "
        "interval; idle: process CPU per second of a uvloop loop with only the guard's ticker, "
        "minus the bare loop's (noisy on a shared machine)",
    }
    print(f"ticker_cost ({'compiled' if compiled() else 'pure Python'}), {args.ticks} ticks:")
    print(f"  (a bare 50 ms sleeper task: +{figures['idle']['sleeper_added_us_per_s']:.1f} µs/s)")
    for name, fig in figures["per_tick"].items():
        idle = figures["idle"][name]
        print(f"  {name:<9} {fig['us_per_tick']:7.2f} µs/tick  {fig['us_per_s']:7.1f} µs/s  "
              f"idle: +{idle['added_us_per_s']:.1f} µs/s")  # fmt: skip
    runs = append_run(args.output, doc, quick=args.quick)
    for name in CONFIGS:
        print_median(
            f"{name}: CPU per second (per-tick × ticks/s)",
            runs,
            lambda run, name=name: run["per_tick"][name]["us_per_s"],
            " µs",
        )


if __name__ == "__main__":
    main()
