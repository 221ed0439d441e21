"""WebSocket handshakes through the guard: the same policies as an HTTP request (method label
``WEBSOCKET``) — emergency shedding, the route's breaker, its rate limit, a concurrency slot —
held until the handshake is answered, not for the connection's lifetime.

`Guard.__call__` (guard/middleware.py) hands every ``websocket`` scope to `handle`. Compiled
with the rest of the request path (see `crisisctl._accelerated`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final

from crisisctl.guard import refusals
from crisisctl.guard.breaker import CLOSED
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.outcomes import CLIENT_CLOSED_REQUEST, is_client_disconnect
from crisisctl.guard.routes import WEBSOCKET_METHOD
from crisisctl.guard.runtime import RouteRuntime
from crisisctl.guard.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard

# Final: compiled code keeps it in a C static instead of looking it up in the module dict
_clock: Final = time.monotonic


class WebSocketSend:
    """The `send` a WebSocket app gets: notes when and how the handshake is answered, and
    gives the concurrency slot back then."""

    __slots__ = ("admitted", "answered_at", "conc", "failed", "send", "status")

    def __init__(self, send: Send, conc: ConcurrencyLimiter | None, admitted: float) -> None:
        self.send = send
        self.conc = conc
        self.admitted = admitted
        self.status = 0
        self.answered_at = admitted
        self.failed = False

    def __call__(self, message: Message) -> Awaitable[None]:
        if not self.status:
            kind = message["type"]
            if kind == "websocket.accept":
                self.answered(101, _clock(), False)
            elif kind == "websocket.close":
                self.answered(403, _clock(), False)
            elif kind == "websocket.http.response.start":
                status: int = message["status"]
                self.answered(status, _clock(), False)
        return self.send(message)

    def answered(self, status: int, now: float, failed: bool) -> None:
        self.status = status
        self.answered_at = now
        self.failed = failed
        conc = self.conc
        if conc is not None:
            self.conc = None
            conc.release(now, -1.0 if failed or status >= 500 else now - self.admitted)


async def deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    body: bytes,
    retry_s: float,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Refuse a WebSocket handshake: an HTTP response if the server can send one, else close."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client is already gone
    if "websocket.http.response" in (scope.get("extensions") or {}):
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry_s - 1e-9))).encode()),
            *headers,
        ]
        await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # 1013 "try again later"; servers answer a handshake closed before accept with 403
        await send({"type": "websocket.close", "code": 1013})


async def handle(guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket handshake goes through the same policies as a request (method label
    ``WEBSOCKET``): emergency shedding, the route's breaker, its rate limit, a concurrency
    slot. The slot is held until the handshake is answered (accept, close or a denial
    response), not for the connection's lifetime, and the handshake is what is counted,
    timed and judged. No timeout applies. A refusal is an HTTP denial response when the
    server offers the ``websocket.http.response`` extension, else a close (the server
    answers the handshake with 403)."""
    if not guard._ticking:
        guard._start_ticker()
    try:
        route = guard._route_for(WEBSOCKET_METHOD, scope["path"])
    except Exception:
        guard._internal_error("route resolution")
        await guard.app(scope, receive, send)
        return
    start = _clock()
    if route.priority <= guard._shed_priority:
        await refuse(guard, route, scope, receive, send, 503, guard._shed_reason, 5.0)
        return
    breaker = route.breaker
    if breaker is not None and breaker.state and not breaker.allow(start):
        retry_s = breaker.retry_after(start)
        await refuse(guard, route, scope, receive, send, 503, "circuit_open", retry_s)
        return
    limiter = route.limiter
    if limiter is not None:
        try:
            key = guard._key(scope)
            if limiter.is_async:
                decision = await limiter.hit(key, start)
            else:
                decision = limiter.hit(key, start)
        except Exception:
            guard._internal_error("rate limiting")
        else:
            if not decision[0]:
                guard._release_probe(breaker)
                route.stats.reject("rate_limited")
                route.counts[4] += 1
                headers = limiter.policy.headers(decision) if guard._rate_headers else []
                await deny(
                    scope, receive, send, 429,
                    refusals.refusal_body(guard._refusal_bodies, "rate_limited", route.label),
                    decision.retry_after_s, headers,
                )  # fmt: skip
                return
    conc = route.conc
    if conc is not None:
        reason = await conc.acquire(route.priority)
        if reason is not None:
            guard._release_probe(breaker)
            await refuse(guard, route, scope, receive, send, 503, reason, 1.0)
            return
        start = _clock()
    else:
        conc = None
    sender = WebSocketSend(send, conc, start)
    route.stats.in_flight += 1
    try:
        await guard.app(scope, receive, sender)
    except BaseException as exc:
        if not sender.status:
            gone = isinstance(exc, asyncio.CancelledError) or is_client_disconnect(exc, send)
            sender.answered(CLIENT_CLOSED_REQUEST if gone else 500, _clock(), not gone)
        raise
    finally:
        route.stats.in_flight -= 1
        if not sender.status:
            sender.answered(403, _clock(), False)  # the app returned without answering
        judge_handshake(guard, route, sender, start)


def judge_handshake(guard: Guard, route: RouteRuntime, sender: WebSocketSend, start: float) -> None:
    """Count, time and judge (the route's breaker) an answered handshake."""
    status = sender.status
    elapsed = sender.answered_at - start
    route.counts[status // 100 if status < 600 else 0] += 1
    route.stats.latency.record_us(max(0, int(elapsed * 1e6)))
    breaker = route.breaker
    if breaker is None:
        return
    if status == CLIENT_CLOSED_REQUEST:
        guard._release_probe(breaker)
        return
    failed = sender.failed
    slow_s = route.slow_s
    slow = slow_s is not None and elapsed >= slow_s
    if breaker.state == CLOSED:
        breaker.calls += 1
    if failed or status >= 500 or slow:
        breaker.failure(sender.answered_at, failed or status >= 500, slow)
    elif breaker.state:
        breaker.success(sender.answered_at)


async def refuse(
    guard: Guard,
    route: RouteRuntime,
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    reason: str,
    retry_s: float,
) -> None:
    """Refuse a handshake for `reason` (counted on the route), with a JSON body."""
    route.stats.reject(reason)
    route.counts[status // 100] += 1
    body = refusals.refusal_body(guard._refusal_bodies, reason, route.label)
    await deny(scope, receive, send, status, body, retry_s, [])
