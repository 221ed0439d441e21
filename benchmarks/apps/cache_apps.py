"""ASGI apps for `benchmarks/cache_cost.py`: one FastAPI route, bare or behind a response cache.

Every variant serves ``GET /items/{item_id}``, whose handler builds the same JSON document
(an item and 20 tags, about 1 KB: a typical API read) that FastAPI validates and serializes.
Built lazily (PEP 562 ``__getattr__``) so that a variant whose library is missing fails alone.

* ``bare_app`` — FastAPI, no cache: every request runs the handler;
* ``crisisctl_app`` — the same app behind `Guard()` whose route rule caches (memory, 1 h ttl);
* ``fastapi_cache2_app`` — the route decorated with fastapi-cache2's ``@cache(expire=3600)``,
  ``InMemoryBackend``;
* ``cashews_app`` — the route decorated with cashews' ``@cache(ttl="1h")``, ``mem://``;
* ``floor_app`` — a raw ASGI app answering the same bytes with no framework and no cache: what
  uvicorn alone costs per request (a cache hit can cost no less).

``GET /ready`` (never cached) answers ``ok`` on every variant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

PATH = "/items/{item_id}"


def item(item_id: int) -> dict[str, Any]:
    """The document every variant serves (what the handler computes on a miss)."""
    return {
        "id": item_id,
        "name": f"item {item_id}",
        "price": round(item_id * 1.25, 2),
        "in_stock": item_id % 3 != 0,
        "tags": [{"id": i, "label": f"tag-{i}", "weight": i / 20} for i in range(20)],
    }


def _app(lifespan: Any = None) -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.get("/ready", response_class=PlainTextResponse)
    async def ready() -> str:
        return "ok"

    return app


def make_bare() -> Any:
    app = _app()

    @app.get(PATH)
    async def get_item(item_id: int) -> dict[str, Any]:
        return item(item_id)

    return app


def make_crisisctl() -> Any:
    from crisisctl.guard import Guard, GuardConfig
    from crisisctl.guard.config import CacheRule, RouteRule

    # how a user enables the cache: a `cache` section on the guard's route rule
    rule = RouteRule(PATH, cache=CacheRule(ttl_s=3600))
    return Guard(make_bare(), GuardConfig(routes=(rule,)))


def make_fastapi_cache2() -> Any:
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.inmemory import InMemoryBackend
    from fastapi_cache.decorator import cache

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        FastAPICache.init(InMemoryBackend(), prefix="bench")
        yield

    app = _app(lifespan)

    @app.get(PATH)
    @cache(expire=3600)
    async def get_item(item_id: int) -> dict[str, Any]:
        return item(item_id)

    return app


def make_cashews() -> Any:
    from cashews import cache

    cache.setup("mem://")
    app = _app()

    @app.get(PATH)
    @cache(ttl="1h")
    async def get_item(item_id: int) -> dict[str, Any]:
        return item(item_id)

    return app


def make_floor() -> Any:
    import json

    body = json.dumps(item(1), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


VARIANTS: dict[str, Callable[[], Any]] = {
    "floor": make_floor,
    "bare": make_bare,
    "crisisctl": make_crisisctl,
    "fastapi_cache2": make_fastapi_cache2,
    "cashews": make_cashews,
}


def __getattr__(name: str) -> Any:
    variant = name.removesuffix("_app")
    if name.endswith("_app") and variant in VARIANTS:
        app = VARIANTS[variant]()
        globals()[name] = app
        return app
    raise AttributeError(name)
