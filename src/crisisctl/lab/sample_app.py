"""A small service with a known, fixed capacity, for the guard demo and tests.

`GET /api/work` runs ~`CRISISCTL_LAB_WORK_MS` (default 10) ms of CPU in a one-thread pool
(hashlib.pbkdf2_hmac releases the GIL), so the service does at most ~1000/work_ms requests a
second however many arrive: beyond that, work queues and latency grows without bound unless
something sheds load. `POST /api/scans` is a costlier operation behind a per-client rate limit,
`GET /api/report` is a low-priority route the emergency mode sheds first, `GET /health` is
always cheap. `guarded_app` wraps it in the guard with a demo configuration;
`app` is the same service with no protection.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig, RouteRule

_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-worker")
_ITERATIONS: int | None = None


def work_iterations(target_ms: float) -> int:
    """pbkdf2 iterations that take about `target_ms` on this machine (measured once)."""
    global _ITERATIONS
    if _ITERATIONS is None:
        probe = 2000
        start = time.perf_counter()
        hashlib.pbkdf2_hmac("sha256", b"crisisctl", b"lab", probe)
        per_iter = (time.perf_counter() - start) / probe
        _ITERATIONS = max(100, int(target_ms / 1000.0 / max(per_iter, 1e-9)))
    return _ITERATIONS


def _burn(iterations: int) -> str:
    return hashlib.pbkdf2_hmac("sha256", b"crisisctl", b"lab", iterations).hex()[:16]


async def _run_work(ms: float) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _burn, work_iterations(ms))


def _work_ms() -> float:
    return float(os.environ.get("CRISISCTL_LAB_WORK_MS", "10"))


async def work(request: Request) -> JSONResponse:
    digest = await _run_work(_work_ms())
    return JSONResponse({"ok": True, "digest": digest})


async def create_scan(request: Request) -> JSONResponse:
    digest = await _run_work(_work_ms() * 2)
    return JSONResponse({"scan": digest, "status": "queued"}, status_code=202)


async def report(request: Request) -> JSONResponse:
    digest = await _run_work(_work_ms())
    return JSONResponse({"report": digest})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def build_app() -> Starlette:
    """The unprotected service."""
    return Starlette(
        routes=[
            Route("/api/work", work),
            Route("/api/scans", create_scan, methods=["POST"]),
            Route("/api/report", report),
            Route("/health", health),
        ]
    )


def demo_config() -> GuardConfig:
    """The guard configuration the demo runs with."""
    return GuardConfig(
        token=os.environ.get("CRISISCTL_GUARD_TOKEN", "crisis-demo-token"),
        routes=(
            RouteRule("/api/scans", methods=("POST",), rate_limit="5/second;100/minute"),
            RouteRule("/api/report", priority="low"),
        ),
        timeout_s=5.0,
        concurrency=ConcurrencyConfig(mode="adaptive", limit=8, max_limit=256),
    )


app = build_app()
guarded_app = Guard(build_app(), demo_config())
