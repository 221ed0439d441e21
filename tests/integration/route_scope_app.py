"""The app of test_guard_route_scope.py, served by uvicorn in a subprocess on 127.0.0.1.

* ``GET /a`` — a fixed capacity: a one-thread pool sleeping `A_S` per request (≈ 100/s);
* ``GET /b`` — a dependency of its own (unbounded, `B_FAST_S`), which turns slow (`B_SLOW_S`)
  after ``POST /slow`` and fast again after ``POST /fast``;
* ``GET /health`` — critical.

The guard's configuration comes as JSON in ``CRISISCTL_TEST_GUARD`` (GuardConfig.from_dict).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from crisisctl.guard import Guard, GuardConfig

A_S, B_FAST_S, B_SLOW_S = 0.010, 0.005, 0.200
_pool = ThreadPoolExecutor(max_workers=1)
_b_delay = [B_FAST_S]


async def route_a(request: Request) -> Response:
    await asyncio.get_running_loop().run_in_executor(_pool, time.sleep, A_S)
    return PlainTextResponse("a")


async def route_b(request: Request) -> Response:
    await asyncio.sleep(_b_delay[0])
    return PlainTextResponse("b")


async def turn(request: Request) -> Response:
    _b_delay[0] = B_SLOW_S if request.url.path == "/slow" else B_FAST_S
    return PlainTextResponse("turned")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


routes = [
    Route("/a", route_a),
    Route("/b", route_b),
    Route("/slow", turn, methods=["POST"]),
    Route("/fast", turn, methods=["POST"]),
    Route("/health", health),
]
config = GuardConfig.from_dict(json.loads(os.environ.get("CRISISCTL_TEST_GUARD", "{}")))
app = Guard(Starlette(routes=routes), config)
