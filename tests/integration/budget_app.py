"""The app behind test_guard_memory_loop.py: memory to hold and free, routes of each priority,
a blocking call in an async route; served by uvicorn in a subprocess (guard_servers.py).

Configured through the environment:

    CRISISCTL_TEST_GUARD        JSON object of GuardConfig fields (GuardConfig.from_dict)
    BUDGET_SOFT_ABOVE_MB        the soft budget: the RSS when this module is imported + this
    BUDGET_HARD_ABOVE_MB        the hard budget likewise (unset: none)
    BUDGET_HOOK_FREES           "1": the registered cleanup hook drops the held memory (a cache
                                trim); otherwise it only counts its calls
    BUDGET_EVERY_S              a periodic cleanup hook (`sweep`, guard.memory.every) with this
                                period (unset: none); GET /periodic counts its calls
"""

from __future__ import annotations

import gc
import json
import os
import time

import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.periodic import memory_of

MIB = 1_048_576
START_RSS = psutil.Process(os.getpid()).memory_info().rss
#: what POST /alloc holds (written, so resident) until POST /free or the hook drops it
HELD: list[bytes] = []
HOOK = {"calls": 0, "freed_mb": 0}
SWEEPS = {"calls": 0}


def sweep() -> None:
    """The app's periodic cleanup hook (registered with guard.memory.every)."""
    SWEEPS["calls"] += 1


def trim_cache() -> None:
    """The app's cleanup hook (registered with guard.memory.on_pressure)."""
    HOOK["calls"] += 1
    if os.environ.get("BUDGET_HOOK_FREES") == "1":
        HOOK["freed_mb"] += sum(len(b) for b in HELD) // MIB
        HELD.clear()


async def alloc(request: Request) -> Response:
    mb = min(int(request.query_params.get("mb", "1")), 512)
    HELD.append(b"\x01" * (mb * MIB))
    return JSONResponse({"held_mb": sum(len(b) for b in HELD) // MIB})


async def free(request: Request) -> Response:
    HELD.clear()
    gc.collect()
    return JSONResponse({"held_mb": 0})


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def block(request: Request) -> Response:
    time.sleep(float(request.query_params.get("s", "0.3")))  # noqa: ASYNC251 (the point)
    return PlainTextResponse("blocked the loop")


async def periodic(request: Request) -> Response:
    memory = memory_of(request)  # the guard's memory policy, from the lifespan state
    return JSONResponse({**SWEEPS, "reachable": memory is not None and memory.periodic.hooks != []})


async def hook(request: Request) -> Response:
    return JSONResponse({**HOOK, "start_rss_mb": START_RSS // MIB})


routes = [
    Route("/alloc", alloc, methods=["POST"]),
    Route("/free", free, methods=["POST"]),
    Route("/low", ok),
    Route("/high", ok),
    Route("/ok", ok),
    Route("/health", ok),
    Route("/block", block),
    Route("/hook", hook),
    Route("/periodic", periodic),
]


def build() -> Guard:
    data = json.loads(os.environ.get("CRISISCTL_TEST_GUARD", "{}"))
    memory = dict(data.get("memory", {}))
    for field, env in (("soft_mb", "BUDGET_SOFT_ABOVE_MB"), ("hard_mb", "BUDGET_HARD_ABOVE_MB")):
        if os.environ.get(env):
            memory[field] = START_RSS / MIB + float(os.environ[env])
    data["memory"] = memory
    data["routes"] = [
        {"pattern": "/low", "priority": "low"},
        {"pattern": "/high", "priority": "high"},
        {"pattern": "/alloc", "priority": "high"},
        {"pattern": "/free", "priority": "high"},
        *data.get("routes", []),
    ]
    guard = Guard(Starlette(routes=routes), GuardConfig.from_dict(data))
    guard.memory.on_pressure(trim_cache)
    if os.environ.get("BUDGET_EVERY_S"):
        guard.memory.every(float(os.environ["BUDGET_EVERY_S"]), sweep)
    return guard


app = build()
