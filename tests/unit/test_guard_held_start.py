"""A fixed-length response's start reaches the server with its first body message.

The ASGI spec asks servers not to send a response's head before its first body message;
uvicorn writes it at once, so the guard holds the start of a response with a Content-Length
and passes the two on back to back (guard/runtime.py, ResponseSend). A streamed response
(no Content-Length) starts at once; what the guard measures at the start is measured when
the app sends it; a start without a body still reaches the server when the app returns; a
start followed by a failure never does (the server answers 500) and counts as a 500.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.types import Message, Receive, Scope, Send

FIXED = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"2"), (b"content-type", b"text/plain")],
}
STREAMED = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream")],
}
BODY = {"type": "http.response.body", "body": b"ok"}


def http_scope(path: str, client: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"guard")], "client": (client, 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip


class App:
    """Sends `start`, notes what the server had received by then, then does `then`."""

    def __init__(self, start: dict[str, Any], then: str = "body") -> None:
        self.start = start
        self.then = then
        self.seen_at_start: list[Message] | None = None
        self.server_log: list[Message] = []
        self.go_on = asyncio.Event()
        self.go_on.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(dict(self.start))
        self.seen_at_start = list(self.server_log)
        await self.go_on.wait()
        if self.then == "body":
            await send(dict(BODY))
        elif self.then == "raise":
            raise RuntimeError("the app failed after its start")


async def serve(guard: Guard, app: App, path: str = "/x") -> list[Message]:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        app.server_log.append(message)

    await guard(http_scope(path), receive, send)
    return app.server_log


async def test_a_fixed_length_start_waits_for_its_body() -> None:
    app = App(FIXED)
    guard = Guard(app, GuardConfig(token="", rate_limit="100/minute"))
    try:
        log = await serve(guard, app)
        assert app.seen_at_start == []  # nothing reached the server at the app's start
        assert [m["type"] for m in log] == ["http.response.start", "http.response.body"]
        assert log[0]["status"] == 200
        names = [name for name, _ in log[0]["headers"]]
        assert names[:2] == [b"content-length", b"content-type"]
        assert b"ratelimit-policy" in names and b"ratelimit" in names  # the guard's lines too
        assert log[1]["body"] == b"ok"
    finally:
        await guard.aclose()


async def test_a_streamed_start_is_passed_on_at_once() -> None:
    app = App(STREAMED)
    guard = Guard(app, GuardConfig(token=""))
    try:
        log = await serve(guard, app)
        assert app.seen_at_start is not None
        assert [m["type"] for m in app.seen_at_start] == ["http.response.start"]
        assert [m["type"] for m in log] == ["http.response.start", "http.response.body"]
    finally:
        await guard.aclose()


async def test_a_start_without_a_body_reaches_the_server_when_the_app_returns() -> None:
    app = App(FIXED, then="return")
    guard = Guard(app, GuardConfig(token=""))
    try:
        log = await serve(guard, app)
        assert app.seen_at_start == []
        assert [m["type"] for m in log] == ["http.response.start"]
        assert guard.route_stats["/x"].by_method["GET"][2] == 1
    finally:
        await guard.aclose()


async def test_a_failure_after_a_held_start_sends_nothing_and_counts_as_500() -> None:
    app = App(FIXED, then="raise")
    guard = Guard(app, GuardConfig(token=""))
    try:
        try:
            await serve(guard, app)
        except RuntimeError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the app's failure must reach the server")
        assert app.server_log == []  # the server answers 500, not a 200 cut short
        counts = guard.route_stats["/x"].by_method["GET"]
        assert counts[5] == 1 and counts[2] == 0
    finally:
        await guard.aclose()


async def test_the_slot_is_given_back_at_the_apps_start_even_while_held() -> None:
    conc = ConcurrencyConfig(mode="static", limit=1, queue_size=0, scope="service")
    held_app = App(FIXED)
    held_app.go_on.clear()  # the first response waits between its start and its body

    class Router:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["path"] == "/held":
                await held_app(scope, receive, send)
            else:
                await send(dict(FIXED))
                await send(dict(BODY))

    guard = Guard(Router(), GuardConfig(token="", concurrency=conc))
    limiter = guard.concurrency
    assert limiter is not None
    try:
        first = asyncio.create_task(serve(guard, held_app, "/held"))
        for _ in range(100):
            if held_app.seen_at_start is not None:
                break
            await asyncio.sleep(0.01)
        assert held_app.seen_at_start == []  # started, held
        assert limiter.in_flight == 0  # the slot came back at the app's start
        other = App(FIXED)
        log = await serve(guard, other, "/other")  # admitted meanwhile, not shed
        assert log[0]["status"] == 200
        held_app.go_on.set()
        await asyncio.wait_for(first, 2.0)
        assert [m["type"] for m in held_app.server_log] == [
            "http.response.start",
            "http.response.body",
        ]
    finally:
        await guard.aclose()
