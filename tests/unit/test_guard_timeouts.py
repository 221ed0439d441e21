"""A timed-out handler still counts (issue 14, point 4): a sync endpoint past its timeout gets
its 504 on time, but its worker thread keeps the request's concurrency slot until the work
really ends, and the guard counts it in `running_after_timeout` meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.types import Message

WORK_S = 0.6
TIMEOUT_S = 0.1


class Worker:
    """A sync endpoint that blocks its worker thread for WORK_S seconds."""

    def __init__(self) -> None:
        self.finished = threading.Event()

    def endpoint(self, request: Request) -> Response:
        time.sleep(WORK_S)
        self.finished.set()
        return PlainTextResponse("late")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"guard")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip


async def call(
    guard: Guard, path: str, log: list[tuple[float, Message]], sent: asyncio.Event | None = None
) -> None:
    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        log.append((time.monotonic(), message))
        if sent is not None:
            sent.set()

    await guard(scope_for(path), receive, send)


def status_of(log: list[tuple[float, Message]]) -> int:
    starts = [m for _, m in log if m["type"] == "http.response.start"]
    assert len(starts) == 1, log
    status: int = starts[0]["status"]
    return status


async def test_a_timed_out_sync_handler_keeps_its_slot_until_its_thread_ends() -> None:
    worker = Worker()
    app = Starlette(routes=[Route("/sync", worker.endpoint), Route("/ok", ok)])
    config = GuardConfig(
        token="",
        timeout_s=TIMEOUT_S,
        concurrency=ConcurrencyConfig(mode="static", limit=1, queue_size=0, scope="service"),
    )
    guard = Guard(app, config)
    conc = guard.concurrency
    assert conc is not None
    try:
        start = time.monotonic()
        slow_log: list[tuple[float, Message]] = []
        sent = asyncio.Event()
        slow = asyncio.create_task(call(guard, "/sync", slow_log, sent))
        await asyncio.wait_for(sent.wait(), 2.0)
        # the client has its 504 on time...
        assert status_of(slow_log) == 504
        assert slow_log[0][0] - start < TIMEOUT_S + 0.2
        assert not worker.finished.is_set()
        # ...while the thread works on, holding the slot: a new request finds none free
        assert conc.in_flight == 1
        assert guard.running_after_timeout == 1
        other: list[tuple[float, Message]] = []
        await call(guard, "/ok", other)
        assert status_of(other) == 503
        await asyncio.wait_for(slow, WORK_S + 1.0)
        assert worker.finished.is_set()
        # the work has ended: the slot is back, nothing of the late answer reached the client
        assert conc.in_flight == 0
        assert guard.running_after_timeout == 0
        assert [m["type"] for _, m in slow_log] == ["http.response.start", "http.response.body"]
        assert b"late" not in slow_log[1][1]["body"]
        again: list[tuple[float, Message]] = []
        await call(guard, "/ok", again)
        assert status_of(again) == 200
        stats = guard.route_stats["/sync"]
        assert stats.rejected == {"timeout": 1}
        assert stats.totals()[5] == 1  # one 5xx: the 504
    finally:
        await guard.aclose()


async def test_a_timed_out_async_handler_is_still_cancelled_at_once() -> None:
    cancelled = asyncio.Event()

    async def sleepy(request: Request) -> Response:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return PlainTextResponse("late")  # pragma: no cover

    app = Starlette(routes=[Route("/async", sleepy)])
    guard = Guard(app, GuardConfig(token="", timeout_s=TIMEOUT_S))
    try:
        log: list[tuple[float, Message]] = []
        start = time.monotonic()
        await asyncio.wait_for(call(guard, "/async", log), 2.0)
        assert status_of(log) == 504
        assert time.monotonic() - start < TIMEOUT_S + 0.2
        assert cancelled.is_set()
        assert guard.running_after_timeout == 0
        assert guard.concurrency is not None and guard.concurrency.in_flight == 0
    finally:
        await guard.aclose()
