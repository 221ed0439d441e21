"""A tiny ASGI app that counts the requests it answers: ``GET /count`` says how many (itself
excluded), ``POST /reset`` starts again. The distributed-load test serves it with uvicorn."""

from __future__ import annotations

from typing import Any

COUNT = {"requests": 0}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Count every request but the /count and /reset ones; answer 200 ``ok``."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/count":
        body = str(COUNT["requests"]).encode()
    elif path == "/reset":
        COUNT["requests"] = 0
        body = b"0"
    else:
        COUNT["requests"] += 1
        body = b"ok"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
