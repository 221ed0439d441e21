"""An origin wrapped by the response cache layer, served by uvicorn in the cache tests.

Configured by ``CRISISCTL_TEST_CACHE`` (JSON): ``store`` ("memory" or "redis"), ``redis_url``,
``prefix``. Cached routes: ``/slow/{id}`` (answers after 0.3 s), ``/flaky`` (ttl 1 s,
stale-if-error 60 s; fails as ``POST /_fail?mode=503|raise|off`` says), ``/nostore``
(``Cache-Control: no-store``) and ``/vary`` (``Vary: Accept-Language``, echoes it). Not cached:
``GET /_calls`` (origin calls per path, JSON), ``/_health``. Every body names the process.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from typing import Any

from crisisctl.guard.cache import CacheLayer
from crisisctl.guard.cache_store import RedisStore
from crisisctl.guard.config import CacheRule, RouteRule

SETTINGS: dict[str, Any] = json.loads(os.environ.get("CRISISCTL_TEST_CACHE", "{}"))
STORE = SETTINGS.get("store", "memory")
CALLS: Counter[str] = Counter()
STATE = {"fail": "off"}
PID = str(os.getpid())


async def send_text(send: Any, status: int, body: str, headers: list[tuple[bytes, bytes]]) -> None:
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})  # fmt: skip


async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/_health":
        await send_text(send, 200, "ok", [])
        return
    if path == "/_calls":
        await send_text(send, 200, json.dumps({"pid": PID, "calls": CALLS}), [])
        return
    if path == "/_fail":
        STATE["fail"] = scope["query_string"].decode().removeprefix("mode=")
        await send_text(send, 200, STATE["fail"], [])
        return
    CALLS[path] += 1
    n = CALLS[path]
    if path.startswith("/slow/"):
        await asyncio.sleep(0.3)
        await send_text(send, 200, f"{path} {n} {PID}", [])
    elif path == "/flaky":
        if STATE["fail"] == "raise":
            raise RuntimeError("the origin is down")
        status = 503 if STATE["fail"] == "503" else 200
        await send_text(send, status, f"flaky {n} {PID}", [])
    elif path == "/nostore":
        await send_text(send, 200, f"nostore {n}", [(b"cache-control", b"no-store")])
    elif path == "/vary":
        language = dict(scope["headers"]).get(b"accept-language", b"").decode()
        await send_text(send, 200, f"vary {n} {language}", [(b"vary", b"Accept-Language")])
    else:
        await send_text(send, 404, "not found", [])


RULES = [
    RouteRule("/slow/{id}", cache=CacheRule(ttl_s=60, store=STORE)),
    RouteRule("/flaky", cache=CacheRule(ttl_s=1, stale_if_error_s=60, store=STORE)),
    RouteRule("/nostore", cache=CacheRule(store=STORE)),
    RouteRule("/vary", cache=CacheRule(store=STORE)),
]
REDIS = (
    RedisStore.from_url(SETTINGS["redis_url"], prefix=SETTINGS["prefix"], timeout_s=1.0)
    if STORE == "redis"
    else None
)
app = CacheLayer(origin, RULES, redis=REDIS)
