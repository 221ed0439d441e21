"""The response cache's Redis store against real Redis servers (one server, and a Redis
Cluster): entries shared, expired by Redis itself, invalidated by prefix on every node, and an
unreachable server costing hits, never errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
from redis_services import (
    CLUSTER_URL,
    REDIS_URL,
    delete_prefix,
    free_port,
    require_cluster,
    require_redis,
    unique_prefix,
)

from crisisctl.guard.cache_store import Entry, RedisStore

pytestmark = pytest.mark.redis


def entry(body: bytes) -> Entry:
    return Entry(200, ((b"content-type", b"text/plain"),), body, 1000.0, 60.0, vary=("x",))


@pytest.fixture(params=["redis", "cluster"])
def url_and_prefix(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    url = require_redis(REDIS_URL) if request.param == "redis" else require_cluster(CLUSTER_URL)
    prefix = unique_prefix()
    yield url, prefix
    delete_prefix(url, prefix)


async def test_entries_are_shared_and_expire_in_redis(url_and_prefix: tuple[str, str]) -> None:
    url, prefix = url_and_prefix
    one = RedisStore.from_url(url, prefix=prefix, timeout_s=1.0)
    two = RedisStore.from_url(url, prefix=prefix, timeout_s=1.0)
    try:
        assert await one.set("/a?x=1", entry(b"body"), 30.0, 0.0)
        assert await two.get("/a?x=1", 0.0) == entry(b"body")
        ttl = await one.client.pttl(one.redis_key("/a?x=1"))
        assert 0 < ttl <= 30_000
        assert await one.set("/short?", entry(b"b"), 0.05, 0.0)
        await asyncio.sleep(0.2)
        assert await two.get("/short?", 0.0) is None
    finally:
        await one.aclose()
        await two.aclose()


async def test_invalidation_drops_a_prefix_on_every_node(url_and_prefix: tuple[str, str]) -> None:
    url, prefix = url_and_prefix
    store = RedisStore.from_url(url, prefix=prefix, timeout_s=1.0)
    try:
        keys = [f"/items/{i}?" for i in range(30)] + ["/items/1?#v", "/other?", "/items*?"]
        for key in keys:
            assert await store.set(key, entry(b"v"), 60.0, 0.0)
        assert await store.invalidate("/items/1") == 12  # /items/1, /items/10-19, the variant
        assert await store.get("/items/2?", 0.0) is not None
        assert await store.invalidate("/items*") == 1  # glob characters are literal
        assert await store.invalidate("/items/") == 19
        assert await store.get("/other?", 0.0) is not None
    finally:
        await store.aclose()


async def test_an_unreachable_server_is_a_miss_never_an_error() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    try:
        assert await store.get("/a?", 0.0) is None
        assert not await store.set("/a?", entry(b"v"), 10.0, 0.0)
        assert store.errors == 1 and store.skipped == 1 and not store.healthy
        with pytest.raises((redis.RedisError, OSError)):
            await store.invalidate("/a")
    finally:
        await store.aclose()


async def test_the_origin_call_lock_has_one_holder_and_expires(
    url_and_prefix: tuple[str, str],
) -> None:
    url, prefix = url_and_prefix
    one = RedisStore.from_url(url, prefix=prefix, timeout_s=1.0)
    two = RedisStore.from_url(url, prefix=prefix, timeout_s=1.0)
    try:
        token = await one.lock("/k?#variant", 5.0)
        assert token is not None
        assert await two.lock("/k?", 5.0) is None  # variants share their primary key's lock
        assert await two.locked("/k?")
        await two.unlock("/k?", "not-the-token")
        assert await two.locked("/k?")
        await one.unlock("/k?", token)
        assert not await two.locked("/k?")
        assert await one.lock("/short?", 0.05) is not None
        await asyncio.sleep(0.2)
        assert await two.lock("/short?", 5.0) is not None  # the dead holder's lock expired
    finally:
        await one.aclose()
        await two.aclose()
