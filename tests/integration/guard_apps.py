"""The ASGI app behind the guard in test_guard_server.py, served by uvicorn in a subprocess.

Configured through the environment (see guard_servers.py):

    CRISISCTL_TEST_GUARD      JSON object of GuardConfig fields (GuardConfig.from_dict)
    CRISISCTL_TEST_GUARD_KEY  "raise": a key_func that raises on every call
    CRISISCTL_TEST_GUARD_APP  "plain": guard a bare ASGI app instead (no routes to discover)

The app keeps what the tests need to observe (cancellations, peak concurrency, a failure
switch) in `STATE`, readable at GET /state and switchable at POST /toggle?fail=0|1.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from crisisctl.guard import Guard, GuardConfig, track
from crisisctl.guard.types import Receive, Scope, Send

STATE: dict[str, Any] = {
    "fail": False,
    "started": 0,
    "finished": 0,
    "cancelled": 0,
    "in_flight": 0,
    "peak": 0,
    "blocking_done": 0,
    "uploads": 0,
}


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def slow(request: Request) -> Response:
    seconds = float(request.query_params.get("s", "0.5"))
    STATE["in_flight"] += 1
    STATE["peak"] = max(STATE["peak"], STATE["in_flight"])
    try:
        await asyncio.sleep(seconds)
    finally:
        STATE["in_flight"] -= 1
    return PlainTextResponse("slow")


async def sleep(request: Request) -> Response:
    """Sleeps `s` seconds, recording whether the work finished or was cancelled."""
    STATE["started"] += 1
    try:
        await asyncio.sleep(float(request.query_params.get("s", "2")))
    except asyncio.CancelledError:
        STATE["cancelled"] += 1
        raise
    STATE["finished"] += 1
    return PlainTextResponse("woke up")


def blocking(request: Request) -> Response:
    """A sync endpoint: Starlette runs it in a worker thread, which nothing can cancel."""
    time.sleep(float(request.query_params.get("s", "1")))
    STATE["blocking_done"] += 1
    return PlainTextResponse("done")


async def events(request: Request) -> Response:
    """Server-sent events: an event every 50 ms for `s` seconds."""
    seconds = float(request.query_params.get("s", "1"))

    async def stream() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            yield f"data: {n}\n\n".encode()
            n += 1
            await asyncio.sleep(0.05)

    return StreamingResponse(stream(), media_type="text/event-stream")


async def upload(request: Request) -> Response:
    """Reads the whole body (Starlette raises ClientDisconnect if the client leaves first)."""
    body = await request.body()
    STATE["uploads"] += 1
    return JSONResponse({"bytes": len(body)})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


async def flaky(request: Request) -> Response:
    if STATE["fail"]:
        return PlainTextResponse("broken", status_code=500)
    return PlainTextResponse("fine")


async def toggle(request: Request) -> Response:
    STATE["fail"] = request.query_params.get("fail") == "1"
    return JSONResponse(STATE)


async def state(request: Request) -> Response:
    return JSONResponse(STATE)


#: memory POST /hog holds (a leak the watch tests drive); ?mb=N adds N MiB, ?free=1 drops all
HELD: list[bytes] = []


async def hog(request: Request) -> Response:
    if request.query_params.get("free") == "1":
        HELD.clear()
    else:
        mb = min(int(request.query_params.get("mb", "1")), 64)
        HELD.append(b"\x01" * (mb << 20))  # written, so resident
    return JSONResponse({"held_mb": sum(len(b) for b in HELD) >> 20})


@track("test.db_query", threshold_ms=5)
async def db_query() -> int:
    await asyncio.sleep(0.03)  # 6x the threshold: a "critical" breach
    return 1


async def tracked(request: Request) -> Response:
    await db_query()
    with track("test.render"):
        body = "x" * 10
    return PlainTextResponse(body)


async def whoami(request: Request) -> Response:
    client = request.client
    return JSONResponse({"client": client.host if client else None})


routes = [
    Route("/ok", ok),
    Route("/health", ok),
    Route("/items/{item_id:int}", item),
    Route("/slow", slow),
    Route("/sleep", sleep),
    Route("/flaky", flaky),
    Route("/toggle", toggle, methods=["POST"]),
    Route("/state", state),
    Route("/hog", hog, methods=["POST"]),
    Route("/tracked", tracked),
    Route("/low", ok),
    Route("/limited", ok),
    Route("/rl/{ns}/{name}", ok),
    Route("/whoami", whoami),
    Route("/blocking", blocking),
    Route("/events", events),
    Route("/upload", upload, methods=["POST"]),
    WebSocketRoute("/ws", echo),
]


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app, nothing to discover: paths under /bad answer 500, others 200."""
    if scope["type"] != "http":
        return
    status = 500 if scope["path"].startswith("/bad") else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def _raising_key(scope: Scope) -> str:
    raise RuntimeError("key function exploded")


def build() -> Guard:
    config = GuardConfig.from_dict(json.loads(os.environ.get("CRISISCTL_TEST_GUARD", "{}")))
    if os.environ.get("CRISISCTL_TEST_GUARD_APP") == "plain":
        return Guard(plain, config)
    if os.environ.get("CRISISCTL_TEST_GUARD_KEY") == "raise":
        return Guard(Starlette(routes=routes), config, key_func=_raising_key)
    return Guard(Starlette(routes=routes), config)


app = build()
