"""The Redis quota store against real Redis servers (one server, a Redis Cluster, a throw-away
server that dies): leases shared by two stores, expiry, renewal, fallback, the model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_services import (
    CLUSTER_URL,
    REDIS_URL,
    RedisServer,
    delete_prefix,
    require_cluster,
    require_redis,
    unique_prefix,
)

from crisisctl.guard.quota_store import Lease, RedisQuotaStore, Refused, open_quota_store

pytestmark = pytest.mark.redis

GROUP = "POST /api/scans/{id}"


@pytest.fixture(scope="module")
def redis_url() -> str:
    return require_redis(REDIS_URL)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefix(redis_url, value)


def store_for(url: str, prefix: str, lease_s: float = 10.0) -> RedisQuotaStore:
    store = open_quota_store(url, lease_s=lease_s, prefix=prefix, timeout_s=2.0)
    assert isinstance(store, RedisQuotaStore)
    return store


@pytest.fixture
async def two_stores(redis_url: str, prefix: str) -> AsyncIterator[tuple[RedisQuotaStore, ...]]:
    a, b = store_for(redis_url, prefix), store_for(redis_url, prefix)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_two_stores_share_one_quota_and_the_keys_share_a_hash_tag(
    two_stores: tuple[RedisQuotaStore, RedisQuotaStore], redis_url: str, prefix: str
) -> None:
    a, b = two_stores
    async with asyncio.timeout(10):
        first = await a.acquire(GROUP, [("all", 2), ("k:alice", 1)])
        second = await b.acquire(GROUP, [("all", 2), ("k:bob", 1)])
        assert isinstance(first, Lease) and isinstance(second, Lease)
        third = await b.acquire(GROUP, [("all", 2), ("k:carol", 1)])
        assert third == Refused(0, "all", 2)
        await a.release(first)
        await a.release(first)  # twice: nothing more
        again = await b.acquire(GROUP, [("all", 2), ("k:alice", 1)])
        assert isinstance(again, Lease)
        per_key = await a.acquire(GROUP, [("k:alice", 1)])
        assert per_key == Refused(0, "k:alice", 1)
    keys = a.keys(GROUP, ["all", "k:x"])
    assert keys[0].startswith(f"{{{prefix}:q:POST /api/scans/(id)}}")
    assert keys[0].split("}")[0] == keys[1].split("}")[0]
    plain = redis.Redis.from_url(redis_url)
    try:
        assert plain.zcard(keys[0]) == 2
        assert 0 < plain.pttl(keys[0]) <= 11_000  # the counter itself expires
    finally:
        plain.close()
    assert a.health.healthy and a.fallback.held == {}


async def test_an_unrenewed_lease_expires_and_a_renewed_one_does_not(
    redis_url: str, prefix: str
) -> None:
    crashed = store_for(redis_url, prefix, lease_s=0.6)
    live = store_for(redis_url, prefix, lease_s=0.6)
    try:
        async with asyncio.timeout(10):
            dead = await crashed.acquire(GROUP, [("all", 2)])
            kept = await live.acquire(GROUP, [("all", 2)])
            assert isinstance(dead, Lease) and isinstance(kept, Lease)
            # the "crashed" store stops renewing (its process would be gone)
            assert crashed._renewer is not None
            crashed._renewer.cancel()
            assert isinstance(await live.acquire(GROUP, [("all", 2)]), Refused)
            await asyncio.sleep(1.2)  # two leases long: only the renewed one is left
            taken = await live.acquire(GROUP, [("all", 2)])
            assert isinstance(taken, Lease)
            assert isinstance(await live.acquire(GROUP, [("all", 2)]), Refused)
            assert live.renewals_total >= 2 and live.leases_lost_total == 0
            await live.release(kept)
            await live.release(taken)
            assert live.active == {}
            await asyncio.sleep(0.3)
            assert live._renewer is None or live._renewer.done()  # stops when nothing is held
    finally:
        await crashed.aclose()
        await live.aclose()


async def test_redis_cluster_shares_the_quota() -> None:
    url = require_cluster(CLUSTER_URL)
    prefix = unique_prefix()
    a, b = store_for(url, prefix), store_for(url, prefix)
    try:
        async with asyncio.timeout(20):
            for group in (GROUP, "GET /x", "POST /y/{id}/z"):  # several slots
                got = [await s.acquire(group, [("all", 2), ("k:k1", 5)]) for s in (a, b, a)]
                assert [type(g).__name__ for g in got] == ["Lease", "Lease", "Refused"]
                lease = got[0]
                assert isinstance(lease, Lease)
                await a.release(lease)
                assert isinstance(await b.acquire(group, [("all", 2)]), Lease)
        assert a.backend == "redis-cluster" and a.health.healthy and b.health.healthy
        assert a.fallback.held == {} and b.fallback.held == {}
    finally:
        await a.aclose()
        await b.aclose()
        delete_prefix(url, prefix)


async def test_redis_down_falls_back_to_local_slots_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store = open_quota_store(server.url, lease_s=5.0, prefix="t", timeout_s=0.3)
    assert isinstance(store, RedisQuotaStore)
    try:
        async with asyncio.timeout(15):
            shared = await store.acquire("g", [("all", 1)])
            assert isinstance(shared, Lease) and not shared.local
            server.stop()
            with caplog.at_level(logging.WARNING, "crisisctl.guard"):
                local = await store.acquire("g", [("all", 1)])
                assert isinstance(local, Lease) and local.local
                assert isinstance(await store.acquire("g", [("all", 1)]), Refused)
            assert not store.health.healthy
            assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
            await store.release(local)
            await store.release(shared)  # fails quietly: the lease expires by itself
            assert store.fallback.held == {} and store.release_errors_total == 1
    finally:
        await store.aclose()
        server.stop()


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.booleans(), st.sampled_from(["k:a", "k:b"])), max_size=25))
async def test_redis_counts_follow_the_model(redis_url: str, ops: list[tuple[bool, str]]) -> None:
    prefix = unique_prefix()
    store = store_for(redis_url, prefix)
    limits = {"all": 3, "k:a": 2, "k:b": 1}
    model = dict.fromkeys(limits, 0)
    leases: list[Lease] = []
    plain = redis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(20):
            for acquire, key in ops:
                if acquire or not leases:
                    got = await store.acquire("g", [("all", 3), (key, limits[key])])
                    full = [n for n in ("all", key) if model[n] >= limits[n]]
                    if full:
                        assert isinstance(got, Refused) and got.name == full[0]
                    else:
                        assert isinstance(got, Lease) and not got.local
                        leases.append(got)
                        model["all"] += 1
                        model[key] += 1
                else:
                    lease = leases.pop(0)
                    await store.release(lease)
                    for n in lease.names:
                        model[n] -= 1
                for name, held in model.items():
                    assert plain.zcard(store.keys("g", [name])[0]) == held
    finally:
        plain.close()
        await store.aclose()
        delete_prefix(redis_url, prefix)
