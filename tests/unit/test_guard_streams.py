"""Streams and WebSockets (issue 14, point 5): service latency is sampled at response start, so a
long stream neither reads as congestion nor as a slow call, nor holds a concurrency slot for its
lifetime; WebSocket handshakes are shed, rate limited, admitted and counted like requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from crisisctl.guard import BreakerConfig, ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.types import Message, Receive, Scope, Send

STREAM_S = 0.3


async def events(request: Request) -> Response:
    """Server-sent events: headers at once, then an event every 50 ms for STREAM_S."""

    async def stream() -> AsyncIterator[bytes]:
        deadline = time.monotonic() + STREAM_S
        n = 0
        while time.monotonic() < deadline:
            yield f"data: {n}\n\n".encode()
            n += 1
            await asyncio.sleep(0.05)

    return StreamingResponse(stream(), media_type="text/event-stream")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/events", events), Route("/ok", ok)])


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"guard")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip


async def call(
    guard: Guard,
    scope: dict[str, Any],
    log: list[Message],
    *first: Message,
    sent: asyncio.Event | None = None,
) -> None:
    pending = list(first)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        log.append(message)
        if sent is not None:
            sent.set()

    await guard(scope, receive, send)


async def test_a_stream_gives_its_slot_back_at_response_start() -> None:
    conc_config = ConcurrencyConfig(mode="static", limit=1, queue_size=0, scope="service")
    guard = Guard(APP, GuardConfig(token="", concurrency=conc_config))
    conc = guard.concurrency
    assert conc is not None
    try:
        log: list[Message] = []
        sent = asyncio.Event()
        stream = asyncio.create_task(call(guard, http_scope("/events"), log, sent=sent))
        while len(log) < 2:
            await asyncio.wait_for(sent.wait(), 2.0)
            sent.clear()
        assert log[0]["status"] == 200
        assert conc.in_flight == 0  # the stream runs on without a slot
        assert guard.route_stats["/events"].in_flight == 1  # but is still in flight
        other: list[Message] = []
        await call(guard, http_scope("/ok"), other)
        assert other[0]["status"] == 200  # admitted while the stream runs
        await asyncio.wait_for(stream, 2.0)
        assert log[-1].get("more_body", False) is False
        assert conc.in_flight == 0
    finally:
        await guard.aclose()


async def test_the_adaptive_limit_samples_latency_at_response_start() -> None:
    guard = Guard(APP, GuardConfig(token="", concurrency=ConcurrencyConfig(scope="service")))
    conc = guard.concurrency
    assert conc is not None and conc.adaptive
    try:
        await call(guard, http_scope("/events"), [])
        assert conc.window_n == 1
        assert conc.window_sum < 0.05  # not the stream's STREAM_S
        hist = guard.route_stats["/events"].latency
        assert hist.count == 1
        assert hist.max_us >= STREAM_S * 0.9e6  # the histogram keeps the whole response
    finally:
        await guard.aclose()


async def test_a_long_stream_is_not_a_slow_call() -> None:
    breaker = BreakerConfig(slow_call_s=0.1, slow_call_ratio=0.5, min_calls=2, window_s=10)
    guard = Guard(APP, GuardConfig(token="", breaker=breaker))
    try:
        for _ in range(3):
            log: list[Message] = []
            await call(guard, http_scope("/events"), log)
            assert log[0]["status"] == 200
        assert guard.breakers["/events"].state == 0
        assert guard.breakers["/events"].window_counts(time.monotonic())[2] == 0
    finally:
        await guard.aclose()


# -- WebSockets --------------------------------------------------------------------------------


async def chat(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI WebSocket app: accept, say hello, close."""
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "hello"})
    await send({"type": "websocket.close", "code": 1000})


def ws_scope(extensions: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "ws", "path": "/chat", "raw_path": b"/chat", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"guard")], "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80), "subprotocols": [], "extensions": extensions,
    }  # fmt: skip


CONNECT: Message = {"type": "websocket.connect"}


async def test_websocket_handshakes_are_rate_limited_and_counted() -> None:
    guard = Guard(chat, GuardConfig(token="", rate_limit="2/minute"))
    try:
        accepted = []
        for _ in range(2):
            log: list[Message] = []
            await call(guard, ws_scope({}), log, CONNECT)
            accepted.append(log[0]["type"])
        assert accepted == ["websocket.accept"] * 2
        # over the limit, with the denial-response extension: a real 429
        log = []
        await call(guard, ws_scope({"websocket.http.response": {}}), log, CONNECT)
        assert log[0]["type"] == "websocket.http.response.start"
        assert log[0]["status"] == 429
        headers = dict(log[0]["headers"])
        assert headers[b"retry-after"].isdigit()
        assert b"ratelimit-policy" in headers
        assert b"rate_limited" in log[1]["body"]
        # without it: the handshake is closed before accept (the server answers 403)
        log = []
        await call(guard, ws_scope({}), log, CONNECT)
        assert log == [{"type": "websocket.close", "code": 1013}]
        stats = guard.route_stats["/chat"]
        assert stats.by_method["WEBSOCKET"][1] == 2  # two 101s
        assert stats.by_method["WEBSOCKET"][4] == 2  # two refusals
        assert stats.rejected == {"rate_limited": 2}
        assert stats.latency.count == 2  # the handshakes are timed
    finally:
        await guard.aclose()


async def test_an_open_websocket_holds_no_concurrency_slot() -> None:
    opened = asyncio.Event()
    finish = asyncio.Event()

    async def long_lived(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            opened.set()
            await finish.wait()
            await send({"type": "websocket.close", "code": 1000})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    conc_config = ConcurrencyConfig(mode="static", limit=1, queue_size=0, scope="service")
    guard = Guard(long_lived, GuardConfig(token="", concurrency=conc_config))
    try:
        socket = asyncio.create_task(call(guard, ws_scope({}), [], CONNECT))
        await opened.wait()
        log: list[Message] = []
        await call(guard, http_scope("/ok"), log)
        assert log[0]["status"] == 200
        finish.set()
        await socket
        assert guard.concurrency is not None and guard.concurrency.in_flight == 0
    finally:
        await guard.aclose()
