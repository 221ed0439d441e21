"""``GET /api/events``: the Server-Sent Events stream, as a plain ASGI app (no middleware).

One stream per page (the console's leader tab). On connect: authenticate (bearer, session
cookie, or the anonymous viewer; 401 JSON otherwise), subscribe, and send in one chunk a
``retry:`` hint, then — when the request carries ``Last-Event-ID`` (header, or
``?last_event_id=``) — a ``reset`` or the buffered events after it. Then live events, each
queue drain sent as one chunk, and a ``: ping`` comment after `ping_s` of silence (proxies keep
the connection; the browser sees nothing). Subscribing and reading the backlog happen in one
synchronous step, so no event falls between them.

The stream ends when the client disconnects (a watcher on ``receive``), when it is too slow
(its queue overflowed: `Subscriber.dropped`), or when the hub closes (shutdown): uvicorn waits
for open responses before it stops, so the hub's close is what lets ``serve`` stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final
from urllib.parse import parse_qs

from crisisctl.server.auth import Authenticator, header_map
from crisisctl.server.events import EventHub, Subscriber, wire_of

__all__ = ["EventStream"]

Scope = dict[str, Any]
Receive = Any
Send = Any

PING: Final = b": ping\n\n"
RETRY_MS: Final = 2000
HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


async def send_json(send: Send, status: int, data: Any) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def last_event_id(scope: Scope, headers: dict[str, str]) -> str | None:
    """The client's resume point: the Last-Event-ID header, else ?last_event_id=."""
    value = headers.get("last-event-id")
    if value:
        return value
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("last_event_id")
    return values[0] if values else None


class EventStream:
    """The ASGI app of the SSE endpoint."""

    def __init__(self, hub: EventHub, auth: Authenticator, *, ping_s: float) -> None:
        self.hub = hub
        self.auth = auth
        self.ping_s = ping_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = header_map(scope["headers"])
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            await send_json(send, 405, {"error": "use GET on /api/events"})
            return
        if self.auth.identify(headers) is None:
            await send_json(send, 401, {"error": "sign in first: POST /api/session"})
            return
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        hub = self.hub
        sub = hub.subscribe()
        reset, backlog = hub.since(last_event_id(scope, headers))
        first = f"retry: {RETRY_MS}\n\n".encode()
        if reset:
            first += hub.reset_event().wire
        first += wire_of(backlog)
        watcher = asyncio.ensure_future(self._disconnected(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await self._pump(send, sub)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-send
            pass
        finally:
            hub.unsubscribe(sub)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _pump(self, send: Send, sub: Subscriber) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ping_s):
                    await sub.ready.wait()
            except TimeoutError:
                if sub.closed:
                    return
                await send({"type": "http.response.body", "body": PING, "more_body": True})
                continue
            sub.ready.clear()
            chunk = sub.take()
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if sub.closed:
                return

    @staticmethod
    async def _disconnected(receive: Receive, sub: Subscriber) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                sub.close()
                return
