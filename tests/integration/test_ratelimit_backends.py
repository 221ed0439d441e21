"""One rate-limit specification, run on every backend `open_storage` builds.

memory://, one Redis server (CRISISCTL_TEST_REDIS_URL) and a real three-master Redis Cluster
(CRISISCTL_TEST_REDIS_CLUSTER_URL, started on loopback by scripts/ensure-redis-cluster.sh).
Every limiter is driven through the `RateLimiter` protocol only (`decide`), as in the style
of alisaifee/limits' `all_storage`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot
from redis_services import (
    CLUSTER_URL,
    REDIS_URL,
    delete_prefix,
    require_cluster,
    require_redis,
    unique_prefix,
)

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.config import GuardConfigError, parse_limits
from crisisctl.guard.ratelimit import (
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    RateLimitPolicy,
    RateLimitStorage,
    open_storage,
)
from crisisctl.guard.redis_store import RedisRateLimiter, RedisStorage
from crisisctl.guard.types import Receive, Scope, Send

BACKENDS = ["memory", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        return require_redis(REDIS_URL)
    return require_cluster(CLUSTER_URL)


@pytest.fixture
def prefix(storage_url: str) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefix(storage_url, value)


@pytest.fixture
async def storage(storage_url: str, prefix: str) -> AsyncIterator[RateLimitStorage]:
    opened = open_storage(storage_url, timeout_s=1.0, prefix=prefix)
    yield opened
    await opened.aclose()


def _limiter(storage: RateLimitStorage, spec: str, strategy: str = "gcra") -> RateLimiter:
    return storage.limiter(RateLimitPolicy("api", parse_limits(spec), strategy))


async def _burst(limiter: RateLimiter, n: int, key: str = "client") -> list[Decision]:
    return [await limiter.decide(key, time.monotonic()) for _ in range(n)]


def _assert_decided_by_storage(storage: RateLimitStorage) -> None:
    """No Redis error, no decision taken by the local fallback."""
    health = storage.health
    if health is not None:
        assert health.healthy, health.last_error
        assert health.errors_total == 0
        assert health.fallback_hits_total == 0


async def test_every_backend_builds_a_limiter_of_the_protocol(storage: RateLimitStorage) -> None:
    limiter = _limiter(storage, "3/second")
    expected = {"memory": MemoryRateLimiter, "redis": RedisRateLimiter}
    assert isinstance(limiter, expected.get(storage.backend, RedisRateLimiter))
    assert isinstance(limiter.is_async, bool)
    assert limiter.policy.name == "api"
    decision = await limiter.decide("client", time.monotonic())
    assert decision == Decision(True, 0, 2, decision.reset_s, 0.0)
    limiter.rotate(time.monotonic())
    assert len(limiter) >= 0


async def test_gcra_admits_the_burst_then_refuses_with_retry_after(
    storage: RateLimitStorage,
) -> None:
    limiter = _limiter(storage, "5/second")
    decisions = await _burst(limiter, 6)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 0.0 < decisions[5].retry_after_s <= 0.2 + 1e-3
    assert (await limiter.decide("someone-else", time.monotonic())).allowed
    _assert_decided_by_storage(storage)


@pytest.mark.parametrize("strategy", ["gcra", "sliding-window"])
async def test_stacked_limits_refuse_by_the_tighter_one_and_consume_nothing(
    storage: RateLimitStorage, strategy: str
) -> None:
    limiter = _limiter(storage, "100/second;4/minute", strategy)
    decisions = await _burst(limiter, 8)
    assert [d.allowed for d in decisions] == [True] * 4 + [False] * 4
    # refused by the minute limit every time: the refusals consumed nothing
    assert [d.limit_index for d in decisions[4:]] == [1] * 4
    assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]
    _assert_decided_by_storage(storage)


async def test_emergency_factor_tightens_every_backend(storage: RateLimitStorage) -> None:
    limiter = _limiter(storage, "10/second")
    limiter.policy.set_factor(0.3)
    decisions = await _burst(limiter, 5)
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 2
    _assert_decided_by_storage(storage)


async def test_two_storages_share_a_budget_exactly_when_the_backend_is_shared(
    storage_url: str, prefix: str
) -> None:
    """Two guards' storages (their own clients): Redis and Redis Cluster share one budget of
    stacked limits (a multi-key script); memory keeps one per process."""
    storages = [open_storage(storage_url, timeout_s=1.0, prefix=prefix) for _ in range(2)]
    try:
        limiters = [_limiter(s, "6/minute;50/hour") for s in storages]
        decisions = await asyncio.gather(
            *(limiters[i % 2].decide("shared", time.monotonic()) for i in range(16))
        )
        allowed = sum(d.allowed for d in decisions)
        assert allowed == (12 if storage_url.startswith("memory://") else 6)
        for opened in storages:
            _assert_decided_by_storage(opened)
    finally:
        for opened in storages:
            await opened.aclose()


# -- Redis Cluster: guards on a real cluster share their limits -----------------------------


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_two_guards_on_a_redis_cluster_share_stacked_limits() -> None:
    url = require_cluster(CLUSTER_URL)
    prefix = unique_prefix()
    config = GuardConfig(
        storage=url, storage_prefix=prefix, rate_limit="4/minute;100/hour", token=""
    )
    guards = [Guard(_ok, config), Guard(_ok, config)]
    try:
        for guard in guards:  # what a server's lifespan start-up does
            await guard.fleet.ready()
        statuses = []
        for i in range(8):
            transport = httpx.ASGITransport(app=guards[i % 2], client=("203.0.113.9", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                statuses.append((await http.get("/ok")).status_code)
        assert statuses == [200] * 4 + [429] * 4
        for guard in guards:
            health = guard.storage_health
            assert health.backend == "redis-cluster"
            assert health.errors_total == 0, health.last_error
            assert health.fallback_hits_total == 0
    finally:
        for guard in guards:
            await guard.aclose()
        delete_prefix(url, prefix)


@given(
    prefix=st.text(
        st.characters(codec="utf-8", blacklist_characters="{} \t\n"), min_size=1, max_size=20
    ),
    name=st.text(max_size=30),
    key=st.text(max_size=40),
    n_limits=st.integers(1, 4),
)
def test_the_keys_of_one_call_share_one_cluster_slot(
    prefix: str, name: str, key: str, n_limits: int
) -> None:
    policy = RateLimitPolicy(name, parse_limits(";".join(["5/second"] * n_limits)), "gcra")
    limiter = RedisStorage("redis+cluster://127.0.0.1:1", prefix=prefix).limiter(policy)
    slots = {key_slot(k.encode()) for k in limiter.keys(key)}
    assert len(limiter.keys(key)) == n_limits
    assert len(slots) == 1


def test_an_unknown_storage_scheme_is_refused_in_one_sentence() -> None:
    with pytest.raises(GuardConfigError, match=r"unknown storage scheme 'mongodb': use memory://"):
        open_storage("mongodb://127.0.0.1/0")
    with pytest.raises(GuardConfigError, match="storage_prefix"):
        GuardConfig(storage_prefix="a{b}")
    assert GuardConfig(storage="redis+cluster://127.0.0.1:7301").storage.startswith("redis+")


async def test_a_plain_url_to_a_cluster_node_says_to_use_redis_cluster() -> None:
    """redis:// at a cluster node: keys on other nodes answer MOVED; the error says what to do."""
    node = require_cluster(CLUSTER_URL).replace("redis+cluster://", "redis://")
    storage = open_storage(node, timeout_s=1.0, prefix=unique_prefix())
    try:
        limiter = _limiter(storage, "5/second")
        for i in range(30):  # keys spread over the slots: some live on other nodes
            await limiter.decide(f"client-{i}", time.monotonic())
            if storage.health.errors_total:
                break
        assert storage.health.errors_total >= 1
        assert "use redis+cluster://host:port" in storage.health.last_error
    finally:
        await storage.aclose()
