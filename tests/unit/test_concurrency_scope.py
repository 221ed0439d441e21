"""Concurrency scope: one adaptive limit per route label under a guard-wide ceiling
(``ConcurrencyConfig.scope="route"``, the default) against one service-wide limit."""

from __future__ import annotations

import asyncio

import pytest

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.concurrency import SHED_OVERLOADED, ConcurrencyLimiter
from crisisctl.guard.config import GuardConfigError, Priority
from crisisctl.guard.types import Receive, Scope, Send

NORMAL = int(Priority.NORMAL)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def serve(limiter: ConcurrencyLimiter, clock: FakeClock, latency_s: float, n: int) -> None:
    """`n` requests one after the other, each `latency_s` long (the fast path only)."""
    for _ in range(n):
        assert limiter.try_acquire()
        clock.now += latency_s
        limiter.release(clock.now, latency_s)


def saturate(limiter: ConcurrencyLimiter, clock: FakeClock, latency_s: float, windows: int) -> None:
    """Windows in which the limit is fully used and every request takes `latency_s`."""
    for _ in range(windows):
        held = 0
        while limiter.try_acquire():
            held += 1
        clock.now += max(latency_s, 0.06)
        for _ in range(held):
            limiter.release(clock.now, latency_s)
        serve(limiter, clock, latency_s, 10)


def test_a_slow_route_cuts_its_own_limit_and_not_the_healthy_routes() -> None:
    clock = FakeClock()
    config = ConcurrencyConfig(limit=8, max_limit=100)
    ceiling = ConcurrencyLimiter(config, clock, ceiling=True)
    fast, slow = ceiling.child("/a"), ceiling.child("/b")
    assert ceiling.child("/a") is fast  # one limiter per label
    for limiter in (fast, slow):
        saturate(limiter, clock, 0.005, 5)  # both healthy: a reference of 5 ms
    before = fast.limit
    saturate(slow, clock, 0.100, 6)  # /b's dependency turns slow (20x)
    assert slow.effective == config.min_limit
    assert fast.limit >= before  # /a's limit is its own
    saturate(fast, clock, 0.005, 3)
    assert fast.effective > slow.effective
    assert ceiling.in_flight == 0  # every slot came back through the ceiling


def test_one_service_wide_limit_is_cut_by_the_slow_route() -> None:
    # the behaviour scope="route" exists for: the slow route's latency cuts everyone's limit
    clock = FakeClock()
    shared = ConcurrencyLimiter(ConcurrencyConfig(limit=8, scope="service"), clock)
    saturate(shared, clock, 0.005, 5)
    saturate(shared, clock, 0.100, 6)
    assert shared.effective == 1


def test_the_ceiling_caps_every_route_together_and_refuses_at_once() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        config = ConcurrencyConfig(mode="static", limit=3, max_limit=4, queue_size=8)
        ceiling = ConcurrencyLimiter(config, clock, ceiling=True)
        a, b = ceiling.child("/a"), ceiling.child("/b")
        assert [a.try_acquire() for _ in range(3)] == [True, True, True]
        assert b.try_acquire()
        assert ceiling.in_flight == 4
        # /b has a free slot of its own, but the guard-wide ceiling is reached
        assert not b.try_acquire()
        assert await b.acquire(NORMAL) == SHED_OVERLOADED
        assert b.queued == 0 and ceiling.shed_overloaded == 1
        a.release(clock.now, -1.0)
        assert ceiling.in_flight == 3
        assert await b.acquire(NORMAL) is None
        assert (b.in_flight, ceiling.in_flight) == (2, 4)

    asyncio.run(scenario())


def test_emergency_factors_reach_every_route_limiter() -> None:
    clock = FakeClock()
    config = ConcurrencyConfig(mode="static", limit=10, max_limit=100)
    ceiling = ConcurrencyLimiter(config, clock, ceiling=True)
    a = ceiling.child("/a")
    ceiling.set_factor(0.5)
    b = ceiling.child("/b")  # a route met later starts at the factor in force
    assert (ceiling.effective, a.effective, b.effective) == (50, 5, 5)
    ceiling.set_factor(1.0)
    assert (a.effective, b.effective) == (10, 10)


def test_housekeeping_closes_the_windows_of_quiet_routes() -> None:
    clock = FakeClock()
    ceiling = ConcurrencyLimiter(ConcurrencyConfig(), clock, ceiling=True)
    a = ceiling.child("/a")
    a.window_sum, a.window_n = 0.03, 3
    clock.now += 2.0
    ceiling.housekeeping(clock.now)
    assert (a.window_n, a.updates) == (0, 1)
    assert a.last_rtt == pytest.approx(0.01)


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _get(guard: Guard, path: str) -> int:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await guard(scope, receive, send)  # type: ignore[arg-type]
    status = sent[0]["status"]
    assert isinstance(status, int)
    return status


def test_the_guard_gives_each_route_its_own_limiter_by_default() -> None:
    async def scenario() -> None:
        guard = Guard(_ok, GuardConfig(token="", critical_paths=("/health",)))
        try:
            for path in ("/a", "/b", "/a", "/health"):
                assert await _get(guard, path) == 200
            conc = guard.concurrency
            assert conc is not None and conc.ceiling_only and not conc.adaptive
            routes = {
                r.label: r for by_path in guard._route_cache.values() for r in by_path.values()
            }
            assert routes["/a"].conc is not routes["/b"].conc
            assert routes["/a"].conc is conc.child("/a")
            assert routes["/health"].conc is None  # critical: never limited
            assert conc.child("/a").updates == 0 and conc.child("/a").in_flight == 0
            described = conc.describe()
            assert described["scope"] == "route"
            routes_described = described["routes"]
            assert isinstance(routes_described, dict) and set(routes_described) == {"/a", "/b"}
            assert conc.in_flight == 0
        finally:
            await guard.aclose()

    asyncio.run(scenario())


def test_service_scope_keeps_one_limiter_for_every_route() -> None:
    async def scenario() -> None:
        config = GuardConfig(token="", concurrency=ConcurrencyConfig(scope="service"))
        guard = Guard(_ok, config)
        try:
            for path in ("/a", "/b"):
                assert await _get(guard, path) == 200
            conc = guard.concurrency
            assert conc is not None and conc.adaptive and not conc.children
            routes = [r for by_path in guard._route_cache.values() for r in by_path.values()]
            assert all(r.conc is conc for r in routes)
            assert conc.describe()["scope"] == "service"
        finally:
            await guard.aclose()

    asyncio.run(scenario())


def test_an_unknown_scope_is_a_clear_error() -> None:
    with pytest.raises(GuardConfigError, match="scope must be route or service"):
        ConcurrencyConfig(scope="global")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["adaptive", "static"])
def test_one_route_under_the_ceiling_behaves_as_the_service_wide_limiter(mode: str) -> None:
    # with one route, scope "route" must change nothing but the bookkeeping of the ceiling
    async def scenario() -> None:
        clock = FakeClock()
        config = ConcurrencyConfig(mode=mode, limit=4, queue_size=4)  # type: ignore[arg-type]
        service = ConcurrencyLimiter(config, clock)
        route = ConcurrencyLimiter(config, clock, ceiling=True).child("/work")
        latencies = [0.005] * 40 + [0.02] * 40 + [0.05] * 40 + [0.005] * 80
        for step, latency in enumerate(latencies):
            outcomes = []
            for lim in (service, route):
                held = 0
                while held < 1 + step % 6 and lim.try_acquire():
                    held += 1
                outcomes.append(held)
            assert outcomes[0] == outcomes[1], step
            clock.now += latency
            for lim in (service, route):
                for _ in range(outcomes[0]):
                    lim.release(clock.now, latency)
            for name in ("effective", "limit", "in_flight", "rtt_noload", "last_rtt", "updates"):
                assert getattr(service, name) == getattr(route, name), (step, name)
        assert route.parent is not None and route.parent.in_flight == 0
        assert mode == "static" or service.updates > 5

    asyncio.run(scenario())


def test_the_ceiling_describes_the_guard_wide_shed_counts() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        config = ConcurrencyConfig(mode="static", limit=1, max_limit=2, queue_size=0)
        ceiling = ConcurrencyLimiter(config, clock, ceiling=True)
        a, b, c = ceiling.child("/a"), ceiling.child("/b"), ceiling.child("/c")
        assert await a.acquire(NORMAL) is None
        assert await a.acquire(NORMAL) == "queue_full"  # /a's own limit, no queue
        assert await b.acquire(NORMAL) is None
        assert await c.acquire(NORMAL) == SHED_OVERLOADED  # the ceiling (2 in flight)
        described = ceiling.describe()
        assert (described["shed_queue_full"], described["shed_overloaded"]) == (1, 1)
        assert described["in_flight"] == 2

    asyncio.run(scenario())
