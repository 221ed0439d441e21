"""Route scope seen from outside and across routes: status and triage show the route limits
(not the guard-wide cap), /_crisis/metrics has a bounded per-route limit gauge, and a waiter held
back by the full ceiling is woken when another route frees a slot."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import generate_latest

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import Priority
from crisisctl.guard.types import Receive, Scope, Send
from crisisctl.probe.guard import describe_limits, summarize_status

NORMAL = int(Priority.NORMAL)


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _get(guard: Guard, path: str) -> None:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await guard(scope, receive, send)  # type: ignore[arg-type]


async def test_a_waiter_held_by_the_full_ceiling_is_woken_by_another_routes_release() -> None:
    config = ConcurrencyConfig(mode="static", limit=2, max_limit=4, queue_timeout_s=5.0)
    ceiling = ConcurrencyLimiter(config, time.monotonic, ceiling=True)
    a, b = ceiling.child("/a"), ceiling.child("/b")
    assert a.try_acquire() and a.try_acquire()
    waiter = asyncio.create_task(a.acquire(NORMAL))  # /a is full, the ceiling is not...
    await asyncio.sleep(0)
    assert a.queued == 1
    assert b.try_acquire() and b.try_acquire()  # ...now it is
    ceiling.set_factor(0.5)  # then an emergency halves every limit: ceiling 2, routes 1
    a.release(time.monotonic(), 0.01)
    a.release(time.monotonic(), 0.01)  # /a has room again, the ceiling (3 in flight) has not
    await asyncio.sleep(0)
    assert not waiter.done()
    b.release(time.monotonic(), 0.01)  # /b's slot frees the ceiling: /a's waiter gets it
    assert await asyncio.wait_for(waiter, 1.0) is None
    assert (a.in_flight, ceiling.in_flight) == (1, 2)


def test_status_and_triage_show_the_route_limits_not_the_cap() -> None:
    async def scenario() -> None:
        guard = Guard(_ok, GuardConfig(token=""))
        try:
            await _get(guard, "/a")
            await _get(guard, "/b")
            conc = guard.concurrency
            assert conc is not None
            conc.child("/b").limit = 3.0
            conc.child("/b")._apply()
            summary = summarize_status(
                {"service": "crisisctl-guard", "concurrency": conc.describe()}
            )
            limits = summary["limits"]
            assert limits["concurrency_scope"] == "route"
            assert limits["concurrency_cap"] == 1000
            assert limits["route_limits"] == {"/b": 3, "/a": 32}
            line = describe_limits(limits)
            assert line == "adaptive per route: /b 3, /a 32 under a cap of 1000"
            service = summarize_status(
                {
                    "service": "crisisctl-guard",
                    "concurrency": {"mode": "static", "scope": "service", "limit": 12},
                }
            )
            assert describe_limits(service["limits"]) == "static limit 12"
        finally:
            await guard.aclose()

    asyncio.run(scenario())


def test_metrics_have_one_bounded_limit_gauge_per_route() -> None:
    async def scenario() -> None:
        guard = Guard(_ok, GuardConfig(token="", max_route_labels=3))
        try:
            for k in range(12):
                await _get(guard, f"/p{k}")
            text = generate_latest(guard.registry).decode()
            samples = [
                line
                for line in text.splitlines()
                if line.startswith("crisisctl_guard_route_concurrency_limit{")
            ]
            assert 'crisisctl_guard_route_concurrency_limit{route="/p0"} 32.0' in samples
            assert len(samples) <= 3 + 2  # the labels, <unmatched> and <other>
            assert "crisisctl_guard_concurrency_limit 1000.0" in text  # the cap, as before
        finally:
            await guard.aclose()

    asyncio.run(scenario())


def test_service_scope_has_no_route_limit_samples() -> None:
    async def scenario() -> None:
        config = GuardConfig(token="", concurrency=ConcurrencyConfig(scope="service"))
        guard = Guard(_ok, config)
        try:
            await _get(guard, "/a")
            text = generate_latest(guard.registry).decode()
            assert "crisisctl_guard_route_concurrency_limit{" not in text
            assert "crisisctl_guard_concurrency_limit 32.0" in text
        finally:
            await guard.aclose()

    asyncio.run(scenario())
