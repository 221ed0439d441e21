"""An endpoint with a fixed capacity, for `benchmarks/overload_goodput.py`.

``GET /work`` runs ~5 ms of CPU work (``hashlib.pbkdf2_hmac``, which releases the GIL) in a
single-worker thread pool, so the service completes at most ~200 requests per second however
many arrive; extra requests wait in the pool's queue. The number of PBKDF2 iterations comes
from the environment variable ``CAPACITY_WORK_ITERS`` (so every variant of a benchmark does the
same work), or is calibrated at import to take ``CAPACITY_WORK_MS`` (default 5) milliseconds.

Variants, selected by uvicorn import string (built lazily, so importing this module never
imports the guard):

* ``benchmarks.apps.capacity_app:unguarded_app`` — the bare Starlette app;
* ``benchmarks.apps.capacity_app:guarded_app`` — the same behind ``Guard(app)`` with the
  default ``GuardConfig`` (adaptive concurrency limit and shedding queue on).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

ENV_ITERS = "CAPACITY_WORK_ITERS"
ENV_MS = "CAPACITY_WORK_MS"


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


def make_unguarded() -> ASGIApp:
    return Starlette(routes=[Route("/work", work), Route("/info", info)])


def make_guarded() -> ASGIApp:
    from crisisctl.guard import Guard

    return Guard(make_unguarded())


_FACTORIES = {"unguarded_app": make_unguarded, "guarded_app": make_guarded}
_BUILT: dict[str, ASGIApp] = {}


def __getattr__(name: str) -> ASGIApp:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _BUILT:
        _BUILT[name] = factory()
    return _BUILT[name]
