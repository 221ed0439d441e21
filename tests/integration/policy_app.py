"""A service behind `Guard()` alone, whose route rules ask for caching and quotas (run by uvicorn).

Configured by CRISISCTL_TEST_POLICY (JSON): a `GuardConfig` dict plus ``api_keys`` ({key:
tier}) for an `ApiKeyTable` key function (given to the guard as its key function). A request
carrying ``x-break: 1`` makes the key function raise.

    POST /api/scans?hold=S   works S seconds, answers {"key", "tier"}
    GET  /api/items/{id}     counts an origin call, waits ?delay=S, answers 200 (500 while the
                             origin fails); ``?cc=no-store`` sets that Cache-Control
    POST /origin/fail        {"fail": true|false}: make the items fail (500) or not
    GET  /origin/calls       origin calls of the items so far, by path
    GET  /policies           the guard's policies document (status ``policies``)
    GET  /health             200 (readiness)
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qs

from crisisctl.guard import Guard
from crisisctl.guard.config import GuardConfig
from crisisctl.guard.tiers import ApiKeyTable
from crisisctl.guard.types import Receive, Scope, Send

settings: dict[str, Any] = json.loads(os.environ.get("CRISISCTL_TEST_POLICY", "{}"))
api_keys = ApiKeyTable(settings.pop("api_keys", {}))
calls: dict[str, int] = {}
failing = False


def key_func(scope: Scope) -> str | tuple[str, str]:
    if (b"x-break", b"1") in scope.get("headers", ()):
        raise LookupError("the token's claims could not be read")
    return api_keys(scope)


async def respond(send: Send, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def service(scope: Scope, receive: Receive, send: Send) -> None:
    global failing
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await app.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    path: str = scope["path"]
    if path == "/api/scans":
        await asyncio.sleep(float(query.get("hold", ["0"])[0]))
        identity = scope.get("crisisctl.client")
        who = {"key": getattr(identity, "key", None), "tier": getattr(identity, "tier", None)}
        await respond(send, 200, json.dumps(who).encode())
    elif path.startswith("/api/items/"):
        calls[path] = calls.get(path, 0) + 1
        await asyncio.sleep(float(query.get("delay", ["0"])[0]))
        if failing:
            await respond(send, 500, b'{"error": "origin down"}')
            return
        headers = []
        if "cc" in query:
            headers.append((b"cache-control", query["cc"][0].encode()))
        body = json.dumps({"item": path, "call": calls[path]}).encode()
        await respond(send, 200, body, headers)
    elif path == "/origin/fail":
        message = await receive()
        failing = bool(json.loads(message.get("body") or b"{}").get("fail"))
        await respond(send, 200, b"{}")
    elif path == "/origin/calls":
        await respond(send, 200, json.dumps(calls).encode())
    elif path == "/policies":
        policies = app.state.request_policies
        await respond(send, 200, json.dumps(policies.describe() if policies else None).encode())
    else:
        await respond(send, 200, b"{}")


config = GuardConfig.from_dict({**settings, "key_func": key_func})
app = Guard(service, config)
