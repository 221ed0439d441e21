"""Critical paths are judged by the raw path: on an app whose routes the guard cannot discover,
health checks are never limited, queued, shed or broken, and one failing path breaks only its
own circuit (issue 14, point 1)."""

from __future__ import annotations

import asyncio

import httpx

from crisisctl.guard import BreakerConfig, ConcurrencyConfig, Guard, GuardConfig, RouteRule
from crisisctl.guard.types import Receive, Scope, Send


class PlainApp:
    """A bare ASGI app (nothing to discover): /bad fails, /hold waits for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status = 500 if path.startswith("/bad") else 200
        if path == "/hold":
            self.holding.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": path.encode()})


def client(guard: Guard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://guard")


async def test_health_is_never_rate_limited_on_an_undiscoverable_app() -> None:
    guard = Guard(PlainApp(), GuardConfig(token="", rate_limit="2/minute"))
    try:
        async with client(guard) as http:
            assert [(await http.get("/health")).status_code for _ in range(4)] == [200] * 4
            assert [(await http.get("/healthz")).status_code for _ in range(4)] == [200] * 4
            assert [(await http.get("/api/1")).status_code for _ in range(3)] == [200, 200, 429]
            # the limit is per key and rule, not per label: another path shares it
            assert (await http.get("/api/2")).status_code == 429
    finally:
        await guard.aclose()


async def test_health_is_never_limited_even_by_a_catch_all_rule() -> None:
    rule = RouteRule("/{rest:path}", rate_limit="1/minute", priority="low")
    guard = Guard(PlainApp(), GuardConfig(token="", routes=(rule,)))
    try:
        async with client(guard) as http:
            assert [(await http.get("/x")).status_code for _ in range(2)] == [200, 429]
            assert [(await http.get("/health")).status_code for _ in range(3)] == [200] * 3
            guard.set_mode("emergency", actor="test")
            assert (await http.get("/x")).status_code == 503  # low priority: shed
            assert (await http.get("/health")).status_code == 200
    finally:
        await guard.aclose()


async def test_one_failing_path_breaks_only_its_own_circuit() -> None:
    breaker = BreakerConfig(min_calls=3, window_s=10, open_s=60)
    guard = Guard(PlainApp(), GuardConfig(token="", breaker=breaker))
    try:
        async with client(guard) as http:
            assert [(await http.get("/bad/7")).status_code for _ in range(3)] == [500] * 3
            assert (await http.get("/bad/8")).json()["reason"] == "circuit_open"
            assert guard.breakers["/bad/{id}"].state == 1
            for path in ("/health", "/healthz", "/ok", "/other/1"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
    finally:
        await guard.aclose()


async def test_health_is_never_queued_behind_a_full_concurrency_limit() -> None:
    app = PlainApp()
    conc = ConcurrencyConfig(mode="static", limit=1, min_limit=1, queue_size=0, scope="service")
    guard = Guard(app, GuardConfig(token="", concurrency=conc))
    try:
        async with client(guard) as http:
            held = asyncio.ensure_future(http.get("/hold"))
            await app.holding.wait()
            assert (await http.get("/other")).status_code == 503
            assert (await http.get("/health")).status_code == 200
            app.release.set()
            assert (await held).status_code == 200
    finally:
        await guard.aclose()


async def test_a_mounted_sub_app_gets_per_path_labels_and_critical_health() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/", app=PlainApp())])
    breaker = BreakerConfig(min_calls=3, window_s=10, open_s=60)
    guard = Guard(app, GuardConfig(token="", rate_limit="3/minute", breaker=breaker))
    try:
        async with client(guard) as http:
            assert [(await http.get("/health")).status_code for _ in range(5)] == [200] * 5
            assert [(await http.get("/bad/1")).status_code for _ in range(3)] == [500] * 3
            assert set(guard.breakers) == {"/bad/{id}"}
            assert "/health" in guard.route_stats
    finally:
        await guard.aclose()
