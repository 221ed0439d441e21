"""An endpoint with a fixed capacity, for `benchmarks/overload_goodput.py`.

``GET /work`` runs ~5 ms of CPU work (``hashlib.pbkdf2_hmac``, which releases the GIL) in a
single-worker thread pool, so the service completes at most ~200 requests per second however
many arrive; extra requests wait in the pool's queue. The number of PBKDF2 iterations comes
from the environment variable ``CAPACITY_WORK_ITERS`` (so every variant of a benchmark does the
same work), or is calibrated at import to take ``CAPACITY_WORK_MS`` (default 5) milliseconds.

More workloads (issue 14, point 14), on the same one-worker pool:

* ``GET /bimodal`` — a bimodal service time: 50 ms of CPU for 10 % of the requests, 1 ms for
  the rest (a seeded random draw per request; mean 5.9 ms);
* ``GET /a`` and ``GET /b`` — two routes: ``/a`` is ``/work``; ``/b`` waits on a dependency
  of its own (a 4-thread pool, sleeping 5 ms), which turns slow (100 ms) when the process
  receives SIGUSR1 (SIGUSR2 turns it back): the slow route neither uses the CPU worker nor
  should cost ``/a`` anything.

The number of PBKDF2 iterations stands for ``CAPACITY_WORK_MS`` milliseconds (default 5).

Variants, selected by uvicorn import string (built lazily, so importing this module never
imports the guard):

* ``benchmarks.apps.capacity_app:unguarded_app`` — the bare Starlette app (also the app of
  the ``uvicorn --limit-concurrency N`` peer);
* ``benchmarks.apps.capacity_app:guarded_app`` — the same behind ``Guard(app)`` with the
  default ``GuardConfig`` (adaptive concurrency limit and shedding queue on);
* ``benchmarks.apps.capacity_app:guarded_service_app`` — the same with one service-wide
  concurrency limit (``ConcurrencyConfig(scope="service")``) instead of one per route;
* ``benchmarks.apps.capacity_app:semaphore_app`` — the same behind `StaticLimit`, a static
  semaphore tried without waiting: at most ``CAPACITY_SEMAPHORE_LIMIT`` requests in the app,
  the others answered 503 at once (what a user writes instead of an adaptive limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

ENV_ITERS = "CAPACITY_WORK_ITERS"
ENV_MS = "CAPACITY_WORK_MS"
ENV_SEMAPHORE = "CAPACITY_SEMAPHORE_LIMIT"
BIMODAL_FAST_MS, BIMODAL_SLOW_MS, BIMODAL_SLOW_SHARE = 1.0, 50.0, 0.1
B_FAST_S, B_SLOW_S, B_THREADS = 0.005, 0.100, 4


def burn(iters: int) -> bytes:
    """The unit of work: PBKDF2-SHA256 over a constant password (releases the GIL)."""
    return hashlib.pbkdf2_hmac("sha256", b"x", b"salt", iters)


def time_burn(iters: int, repeats: int = 7, quantile: float = 0.5) -> float:
    """Seconds of CPU time (this thread's) one `burn(iters)` takes: the `quantile` of `repeats`.

    CPU time, not wall time, so another process sharing the core does not inflate it.
    """
    samples = []
    for _ in range(repeats):
        start = time.thread_time()
        burn(iters)
        samples.append(time.thread_time() - start)
    samples.sort()
    return samples[min(len(samples) - 1, int(quantile * len(samples)))]


def calibrate_iters(target_ms: float = 5.0) -> int:
    """Iterations for which one `burn` takes about `target_ms` milliseconds of CPU.

    Uses a low quantile of the timings: on a shared machine interference only slows a burn
    down, so the fast samples are the closest to the machine's real speed.
    """
    iters = 1000
    burn(iters)  # warm up
    for repeats in (5, 9, 21):
        seconds = time_burn(iters, repeats=repeats, quantile=0.2)
        iters = max(1, round(iters * (target_ms / 1000.0) / max(seconds, 1e-7)))
    return iters


WORK_ITERS = int(os.environ.get(ENV_ITERS) or calibrate_iters(float(os.environ.get(ENV_MS, "5"))))
#: one worker: the fixed capacity of the service
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capacity-work")


async def work(request: Request) -> Response:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_executor, burn, WORK_ITERS)
    return PlainTextResponse("done")


async def info(request: Request) -> Response:
    return PlainTextResponse(f"iters={WORK_ITERS}")


WORK_MS = float(os.environ.get(ENV_MS, "5"))
_bimodal_draw = random.Random(14)
_b_executor = ThreadPoolExecutor(max_workers=B_THREADS, thread_name_prefix="capacity-b")
_b_delay = [B_FAST_S]


async def bimodal(request: Request) -> Response:
    slow = _bimodal_draw.random() < BIMODAL_SLOW_SHARE
    ms = BIMODAL_SLOW_MS if slow else BIMODAL_FAST_MS
    iters = max(1, round(WORK_ITERS * ms / WORK_MS))
    await asyncio.get_running_loop().run_in_executor(_executor, burn, iters)
    return PlainTextResponse("done")


async def route_b(request: Request) -> Response:
    await asyncio.get_running_loop().run_in_executor(_b_executor, time.sleep, _b_delay[0])
    return PlainTextResponse("done")


def _turn_b(slow: bool) -> None:
    _b_delay[0] = B_SLOW_S if slow else B_FAST_S


signal.signal(signal.SIGUSR1, lambda *_: _turn_b(True))
signal.signal(signal.SIGUSR2, lambda *_: _turn_b(False))


class StaticLimit:
    """A static semaphore tried without waiting: over `limit` requests in flight, 503 at once."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"overloaded"})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def make_unguarded() -> ASGIApp:
    return Starlette(
        routes=[
            Route("/work", work),
            Route("/info", info),
            Route("/bimodal", bimodal),
            Route("/a", work),
            Route("/b", route_b),
        ]
    )


def make_semaphore() -> ASGIApp:
    return StaticLimit(make_unguarded(), int(os.environ.get(ENV_SEMAPHORE, "2")))


def make_guarded() -> ASGIApp:
    from crisisctl.guard import Guard

    return _traced(Guard(make_unguarded()))


ENV_TRACE = "CAPACITY_GUARD_TRACE"


def _traced(guard: ASGIApp) -> ASGIApp:
    """With ``CAPACITY_GUARD_TRACE=path``, a thread appends the guard's concurrency state every
    20 ms to `path` (JSON lines: time, then limit, in flight, queued, recent and no-load
    latency, shed counts of the ceiling or service limiter and of each route limiter):
    diagnostics of the controller over a run, off by default."""
    path = os.environ.get(ENV_TRACE)
    conc: Any = getattr(guard, "concurrency", None)
    if not path or conc is None:
        return guard

    def row(lim: Any) -> list[Any]:
        return [
            lim.effective, lim.in_flight, lim.queued, lim.last_rtt, lim.rtt_noload,
            lim.shed_overloaded, lim.shed_queue_timeout, lim.shed_queue_full,
        ]  # fmt: skip

    def sample() -> None:
        with open(path, "a", encoding="utf-8") as out:
            while True:
                time.sleep(0.02)
                state = {"t": time.monotonic(), "guard": row(conc)}
                for label, lim in list(conc.children.items()):
                    state[label] = row(lim)
                out.write(json.dumps(state) + "\n")
                out.flush()

    threading.Thread(target=sample, daemon=True, name="guard-trace").start()
    return guard


def make_guarded_service() -> ASGIApp:
    from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig

    config = GuardConfig(concurrency=ConcurrencyConfig(scope="service"))
    return _traced(Guard(make_unguarded(), config))


_FACTORIES = {
    "unguarded_app": make_unguarded,
    "guarded_app": make_guarded,
    "guarded_service_app": make_guarded_service,
    "semaphore_app": make_semaphore,
}
_BUILT: dict[str, ASGIApp] = {}


def __getattr__(name: str) -> ASGIApp:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _BUILT:
        _BUILT[name] = factory()
    return _BUILT[name]
