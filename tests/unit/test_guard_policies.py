"""Guard() and its request policies, in-process: which routes get a policy hook, tiers' rate
limits, emergency tightening (the real-server behaviour is in tests/integration)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from crisisctl.guard import ConcurrencyConfig, Guard, GuardConfig
from crisisctl.guard.config import CacheRule, GuardConfigError, RouteRule, TierConfig
from crisisctl.guard.tier_limits import UNLIMITED, TieredLimiter
from crisisctl.guard.tiers import ClientIdentity
from crisisctl.guard.types import Message, Receive, Scope, Send


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call(guard: Guard, path: str, method: str = "GET", **headers: str) -> int:
    statuses: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope: dict[str, Any] = {
        "type": "http", "method": method, "path": path, "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    await guard(scope, receive, send)
    return statuses[0]


def test_a_guard_configured_without_policies_builds_none() -> None:
    guard = Guard(ok_app, GuardConfig(routes=(RouteRule("/a", rate_limit="5/second"),)))
    assert guard.policy_set is None
    assert guard.state.request_policies is None


async def test_only_the_rules_asking_for_a_policy_get_a_hook() -> None:
    rules = (RouteRule("/cached", cache=CacheRule(ttl_s=5)), RouteRule("/plain"))
    guard = Guard(ok_app, GuardConfig(routes=rules))
    assert guard.policy_set is not None
    assert guard.policy_set.for_rule(rules[0]) is not None
    assert guard.policy_set.for_rule(rules[1]) is None
    assert await call(guard, "/plain") == 200
    assert await call(guard, "/cached") == 200
    described = guard.policy_set.describe()
    assert described["cache"]["routes"]["/cached"]["misses"] == 1  # type: ignore[index]
    await guard.aclose()


def test_a_redis_cache_rule_without_redis_storage_is_refused_at_build_time() -> None:
    rule = RouteRule("/x", cache=CacheRule(store="redis"))
    with pytest.raises(GuardConfigError, match="storage URL"):
        Guard(ok_app, GuardConfig(routes=(rule,)))


async def test_emergency_mode_tightens_the_route_quota_the_guard_applies() -> None:
    rule = RouteRule("/scan", max_concurrent=4, emergency_max_concurrent=1)
    guard = Guard(ok_app, GuardConfig(routes=(rule,)))
    assert guard.policy_set is not None
    routes: Any = guard.policy_set.describe()["quotas"]["routes"]  # type: ignore[index]
    assert routes["/scan"]["max_concurrent"] == 4
    guard.set_mode("emergency")
    routes = guard.policy_set.describe()["quotas"]["routes"]  # type: ignore[index]
    assert routes["/scan"]["max_concurrent"] == 1
    await guard.aclose()


async def test_each_tier_is_limited_by_its_own_rate_limit() -> None:
    config = GuardConfig(
        routes=(RouteRule("/api", rate_limit="1/minute"),),
        tiers=(TierConfig("free"), TierConfig("pro", rate_limit="3/minute")),
        key_func=lambda scope: ("k-" + dict(scope["headers"])[b"x-who"].decode(),
                                dict(scope["headers"])[b"x-tier"].decode()),
    )  # fmt: skip
    guard = Guard(ok_app, config)
    free = [await call(guard, "/api", **{"x-who": "a", "x-tier": "free"}) for _ in range(2)]
    pro = [await call(guard, "/api", **{"x-who": "b", "x-tier": "pro"}) for _ in range(4)]
    assert free == [200, 429]
    assert pro == [200, 200, 200, 429]
    assert guard.internal_errors == 0  # (the compiled request path types keys as str)
    await guard.aclose()


async def test_a_raising_key_function_puts_the_request_in_the_default_tier_never_failing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(scope: Scope) -> str:
        raise LookupError("no claims")

    config = GuardConfig(
        routes=(RouteRule("/api", rate_limit="2/minute"),),
        tiers=(TierConfig("free"), TierConfig("pro", rate_limit="100/minute")),
        key_func=broken,
    )
    guard = Guard(ok_app, config)
    statuses = [await call(guard, "/api") for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]
    warnings = [r for r in caplog.records if "key function raised" in r.getMessage()]
    assert len(warnings) == 1  # once per reason a minute, not per request
    assert guard.internal_errors == 0
    await guard.aclose()


async def test_a_tier_without_any_limit_on_a_route_is_not_limited_there() -> None:
    limiter = TieredLimiter({"free": None}, "free")
    for _ in range(100):
        decision = await limiter.hit(ClientIdentity("k", "free"), 0.0)
        assert decision.allowed
    assert limiter.policy is UNLIMITED


def test_policies_module_stays_light() -> None:
    """guard/policies.py is imported by the middleware: it must not pull the Redis client in."""
    code = (
        "import sys; import crisisctl.guard.middleware; "
        "print('redis' in sys.modules, 'crisisctl.guard.policy_set' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_a_background_refresh_holds_a_concurrency_slot_and_waits_for_a_free_one() -> None:
    origin_calls: list[str] = []
    release_slow = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await release_slow.wait()
        else:
            origin_calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    rule = RouteRule("/items", cache=CacheRule(ttl_s=0.05, stale_while_revalidate_s=60))
    config = GuardConfig(
        routes=(rule,),
        concurrency=ConcurrencyConfig(mode="static", limit=1, queue_size=0, scope="service"),
    )
    guard = Guard(app, config)
    assert await call(guard, "/items") == 200 and origin_calls == ["/items"]
    await asyncio.sleep(0.1)  # stale now
    slow = asyncio.create_task(call(guard, "/slow"))  # holds the only slot
    async with asyncio.timeout(5):
        while True:
            if guard.concurrency is not None and guard.concurrency.in_flight == 1:
                break
            await asyncio.sleep(0.005)
    assert await call(guard, "/items") == 200  # the stale entry; no slot for a refresh
    await asyncio.sleep(0.05)
    assert origin_calls == ["/items"]
    stats = guard.policy_set.describe()["cache"]["routes"]["/items"]  # type: ignore[union-attr,index]
    assert stats["refreshes_skipped"] == 1 and stats["refreshes"] == 0
    release_slow.set()
    assert await slow == 200
    assert await call(guard, "/items") == 200  # stale again: now the refresh runs
    async with asyncio.timeout(5):
        while True:
            if len(origin_calls) == 2:
                break
            await asyncio.sleep(0.005)
    assert guard.concurrency is not None and guard.concurrency.in_flight == 0
    await guard.aclose()


async def test_with_a_memory_budget_the_cache_sweeps_its_expired_entries_under_pressure() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await ok_app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    rule = RouteRule("/items/{id}", cache=CacheRule(ttl_s=0.05))
    memory = {"soft_mb": 1, "collect": False, "trim": False}
    guard = Guard(app, GuardConfig.from_dict({"routes": (rule,), "memory": memory}))
    assert guard.policy_set is not None
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.create_task(guard(lifespan, inbox.get, sent.put))
    await inbox.put({"type": "lifespan.startup"})
    await sent.get()
    assert guard.memory.hooks == (guard.policy_set.drop_expired,)
    for n in range(3):
        assert await call(guard, f"/items/{n}") == 200
    store = guard.policy_set.cache.memory
    assert len(store) == 3
    await asyncio.sleep(0.1)  # expired, and no request meets them again
    round_ = await guard.memory.cleanup()
    assert len(store) == 0 and store.bytes == 0 and not round_["failed"]
    guard.policy_set.add_memory_hooks(guard.memory)  # once only
    assert len(guard.memory.hooks) == 1
    await inbox.put({"type": "lifespan.shutdown"})
    await running
