"""Redis-backed rate limits against a real Redis server (never a mock).

The shared server comes from CRISISCTL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15);
the outage/recovery test starts its own throw-away `redis-server` on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from redis_services import (
    REDIS_URL,
    RedisServer,
    delete_prefix,
    free_port,
    require_redis,
    unique_prefix,
)

from crisisctl.guard.config import parse_limits
from crisisctl.guard.ratelimit import Decision, MemoryRateLimiter, RateLimitPolicy
from crisisctl.guard.redis_store import (
    RedisRateLimiter,
    StorageHealth,
    create_limiter,
    make_redis_client,
    mask_url,
)

pytestmark = pytest.mark.redis

TIMEOUT_S = 0.5
LOGGER = "crisisctl.guard"


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The test server's URL; the test fails, saying what to do, when nothing answers there."""
    return require_redis(REDIS_URL)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to the test; its keys are deleted afterwards."""
    value = unique_prefix()
    yield value
    delete_prefix(redis_url, value)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    conn = make_redis_client(redis_url, TIMEOUT_S)
    yield conn
    await conn.aclose()


def _limiter(
    spec: str,
    client: redis.asyncio.Redis,
    prefix: str,
    *,
    strategy: str = "gcra",
    name: str = "api",
    url: str = REDIS_URL,
) -> RedisRateLimiter:
    policy = RateLimitPolicy(name, parse_limits(spec), strategy)
    limiter = create_limiter(
        policy,
        url,
        health=StorageHealth(url),
        client=client,
        timeout_s=TIMEOUT_S,
        key_prefix=prefix,
    )
    assert isinstance(limiter, RedisRateLimiter)
    return limiter


async def _burst(limiter: RedisRateLimiter, n: int, key: str = "client") -> list[Decision]:
    return [await limiter.hit(key, time.monotonic()) for _ in range(n)]


async def _server_seconds(client: redis.asyncio.Redis) -> float:
    seconds, micros = await client.time()
    return float(seconds) + micros / 1e6


def _assert_served_by_redis(limiter: RedisRateLimiter) -> None:
    assert limiter.health.healthy
    assert limiter.health.errors_total == 0
    assert limiter.health.fallback_hits_total == 0
    assert len(limiter) == 0


# ---------------------------------------------------------------------------------------- GCRA


async def test_gcra_burst_refusal_and_refill(client: redis.asyncio.Redis, prefix: str) -> None:
    limiter = _limiter("10/second", client, prefix)
    decisions = await _burst(limiter, 11)

    assert [d.allowed for d in decisions[:10]] == [True] * 10
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    assert all(d.retry_after_s == 0.0 and d.limit_index == 0 for d in decisions[:10])
    assert 0.9 <= decisions[9].reset_s <= 1.0 + 1e-3
    refused = decisions[10]
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0.0 < refused.retry_after_s <= 0.1 + 1e-3

    await asyncio.sleep(0.1)
    again = await _burst(limiter, 2)
    assert [d.allowed for d in again] == [True, False]

    # state is one TAT per limit, expiring after at most one period
    (key,) = limiter.keys("client")
    assert 0 < await client.pttl(key) <= 1000
    assert await client.pttl(limiter.keys("other")[0]) == -2  # untouched key: no state
    _assert_served_by_redis(limiter)


async def test_gcra_stacked_limits_refuse_by_the_right_index(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = _limiter("5/second;7/minute", client, prefix)
    first = await _burst(limiter, 6)
    assert [d.allowed for d in first] == [True] * 5 + [False]
    assert [d.remaining for d in first[:5]] == [4, 3, 2, 1, 0]  # the per-second limit is tighter
    assert first[5].limit_index == 0
    assert 0.0 < first[5].retry_after_s <= 0.2 + 1e-3

    # two per-second slots come back after 0.4 s; the minute limit then has exactly 2 left
    await asyncio.sleep(0.45)
    second = await _burst(limiter, 2)
    assert [d.allowed for d in second] == [True, True]

    # the second limit has room again, the minute limit has none: refused by index 1 ...
    await asyncio.sleep(0.45)
    tat_key = limiter.keys("client")[0]
    tat_before = await client.get(tat_key)
    refused = await _burst(limiter, 10)
    assert all(not d.allowed for d in refused)
    # ... every time: a request refused by the minute limit did not consume the second one
    assert [d.limit_index for d in refused] == [1] * 10
    assert all(d.retry_after_s > 5.0 for d in refused)  # T = 60/7 s, minus ~1 s elapsed
    assert await client.get(tat_key) == tat_before
    _assert_served_by_redis(limiter)


async def test_two_instances_share_one_budget(redis_url: str, prefix: str) -> None:
    """Two limiters with their own clients (two servers) draw on one 10/second budget."""
    clients = [make_redis_client(redis_url, TIMEOUT_S) for _ in range(2)]
    try:
        limiters = [_limiter("10/second", c, prefix) for c in clients]
        # warm both connections up so the burst below is quick
        for c in clients:
            await c.ping()
        hits = [limiters[i % 2].hit("shared", time.monotonic()) for i in range(20)]
        decisions = await asyncio.gather(*hits)
        assert sum(d.allowed for d in decisions) == 10
        for limiter in limiters:
            _assert_served_by_redis(limiter)
        # another key has its own budget
        assert (await limiters[1].hit("someone-else", time.monotonic())).allowed
    finally:
        for c in clients:
            await c.aclose()


async def test_mode_factor_halves_the_amount_seen_by_redis(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = _limiter("10/second", client, prefix)
    limiter.policy.set_factor(0.5)
    decisions = await _burst(limiter, 6)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 0.0 < decisions[5].retry_after_s <= 0.2 + 1e-3  # T = 1 s / 5

    window = _limiter("10/second", client, prefix, strategy="sliding-window", name="win")
    window.policy.set_factor(0.5)
    allowed = sum(d.allowed for d in await _burst(window, 8))
    assert allowed in (5, 6)  # 5 per window; 6 only if the burst straddles a window edge
    _assert_served_by_redis(limiter)


# ------------------------------------------------------------------------------ sliding window


async def test_sliding_window_enforces_and_weights_previous_window(
    client: redis.asyncio.Redis, prefix: str
) -> None:
    limiter = _limiter("4/second", client, prefix, strategy="sliding-window")
    # start just after a window edge of the Redis clock (windows are whole seconds)
    now = await _server_seconds(client)
    await asyncio.sleep(1.0 - (now % 1.0) + 0.02)

    decisions = await _burst(limiter, 6)
    assert [d.allowed for d in decisions] == [True] * 4 + [False, False]
    assert [d.remaining for d in decisions[:4]] == [3, 2, 1, 0]
    refused = decisions[4]
    assert refused.limit_index == 0
    assert 0.5 < refused.reset_s <= 1.0
    # next window, the 4 counted now weigh 4 * (1 - x) <= 3 only from x = 1/4 on
    assert abs(refused.retry_after_s - (refused.reset_s + 0.25)) <= 2e-3

    # 3/8 into the next window the previous 4 still weigh 4 * 5/8 = 2.5: only one more fits
    # (a fixed window would admit 4 again)
    now = await _server_seconds(client)
    await asyncio.sleep(1.0 - (now % 1.0) + 0.375)
    later = await _burst(limiter, 3)
    assert [d.allowed for d in later] == [True, False, False]
    assert later[0].remaining == 0
    assert 0.0 < later[1].retry_after_s < 0.7
    (key,) = limiter.keys("client")
    assert 1000 < await client.pttl(key) <= 2000  # counts live two windows
    _assert_served_by_redis(limiter)


async def test_sliding_window_stacked_limits(client: redis.asyncio.Redis, prefix: str) -> None:
    limiter = _limiter("3/second;4/minute", client, prefix, strategy="sliding-window")
    now = await _server_seconds(client)
    await asyncio.sleep(1.0 - (now % 1.0) + 0.02)
    first = await _burst(limiter, 4)
    assert [d.allowed for d in first] == [True, True, True, False]
    assert first[3].limit_index == 0
    now = await _server_seconds(client)
    await asyncio.sleep(1.0 - (now % 1.0) + 0.9)  # the previous second weighs 0.3 now
    second = await _burst(limiter, 3)
    # 4th request of the minute is admitted; the 5th is refused by the minute limit,
    # every time (refused requests consume nothing)
    assert [d.allowed for d in second] == [True, False, False]
    assert [d.limit_index for d in second[1:]] == [1, 1]
    _assert_served_by_redis(limiter)


# -------------------------------------------------------------------------- outage & recovery


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _infos(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


async def test_unreachable_redis_falls_back_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_redis_client(url, 0.2)
    health = StorageHealth(url, retry_interval_s=0.25)
    try:
        policy = RateLimitPolicy("api", parse_limits("5/second"), "gcra")
        limiter = create_limiter(policy, url, health=health, client=client, timeout_s=0.2)
        assert isinstance(limiter, RedisRateLimiter)

        # local limits still hold
        burst = await _burst(limiter, 8)
        assert [d.allowed for d in burst] == [True] * 5 + [False] * 3
        assert burst[5].retry_after_s > 0
        assert len(limiter) == 1  # the fallback holds the key
        assert not health.healthy
        assert health.errors_total == 1  # the other 7 hits did not touch Redis
        assert health.down_since is not None and health.last_error_at is not None
        assert health.last_error and "hunter2" not in health.last_error

        # many hits over ~1 s: Redis is probed about once per retry interval, never more
        started = time.monotonic()
        hits = len(burst)
        while time.monotonic() - started < 1.0:
            await limiter.hit("client", time.monotonic())
            hits += 1
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        assert 2 <= health.errors_total <= 2 + elapsed / health.retry_interval_s
        assert health.fallback_hits_total == hits
        assert not health.healthy

        # logged once per outage, with the password masked
        warnings = _warnings(caplog)
        assert len(warnings) == 1
        message = warnings[0].getMessage()
        assert "unreachable" in message and "using local in-memory limits" in message
        assert "hunter2" not in message and ":***@" in message
        assert not _infos(caplog)

        described = health.describe()
        assert described["backend"] == "redis"
        assert described["healthy"] is False
        assert described["url"] == url.replace("hunter2", "***")
        assert described["errors_total"] == health.errors_total

        limiter.rotate(time.monotonic())
    finally:
        await client.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def test_outage_and_recovery_with_a_real_server(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    redis_server.start()
    client = make_redis_client(redis_server.url, 0.2)
    health = StorageHealth(redis_server.url, retry_interval_s=0.2)
    try:
        policy = RateLimitPolicy("api", parse_limits("100/second"), "gcra")
        limiter = create_limiter(
            policy, redis_server.url, health=health, client=client, timeout_s=0.2
        )
        assert isinstance(limiter, RedisRateLimiter)
        assert (await limiter.hit("client", time.monotonic())).allowed
        assert health.healthy and health.fallback_hits_total == 0

        redis_server.stop()
        for _ in range(20):
            assert (await limiter.hit("client", time.monotonic())).allowed
        assert not health.healthy
        assert health.errors_total == 1
        assert health.fallback_hits_total == 20
        assert len(_warnings(caplog)) == 1

        redis_server.start()  # empty: the script cache is gone too (NOSCRIPT -> reload)
        await asyncio.sleep(health.retry_interval_s + 0.05)
        decision = await limiter.hit("client", time.monotonic())
        assert decision.allowed
        assert health.healthy and health.down_since is None
        assert health.fallback_hits_total == 20  # that hit was answered by Redis
        assert decision.remaining == 99  # fresh server, fresh budget: Redis decided
        infos = _infos(caplog)
        assert len(infos) == 1 and "recovered" in infos[0].getMessage()

        # a second outage is logged again, once
        redis_server.stop()
        for _ in range(5):
            await limiter.hit("client", time.monotonic())
        assert len(_warnings(caplog)) == 2
    finally:
        await client.aclose()


async def test_timeout_bounds_a_hanging_server() -> None:
    """A server that accepts but never answers costs at most timeout_s, then the fallback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)  # never accepted, never answered
    url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    client = make_redis_client(url, 0.15)
    try:
        policy = RateLimitPolicy("api", parse_limits("2/second"), "gcra")
        health = StorageHealth(url, retry_interval_s=10.0)
        limiter = create_limiter(policy, url, health=health, client=client, timeout_s=0.15)
        assert isinstance(limiter, RedisRateLimiter)
        started = time.monotonic()
        decisions = await _burst(limiter, 3)
        assert time.monotonic() - started < 0.5
        assert [d.allowed for d in decisions] == [True, True, False]
        assert health.errors_total == 1 and health.last_error
    finally:
        await client.aclose()
        sock.close()


# ------------------------------------------------------------------------------------ plumbing


def test_create_limiter_memory_and_url_masking() -> None:
    policy = RateLimitPolicy("api", parse_limits("1/second"), "gcra")
    memory = create_limiter(policy, "memory://", health=None, client=None, timeout_s=0.25)
    assert isinstance(memory, MemoryRateLimiter)
    assert mask_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_url("rediss://:secret@host/1") == "rediss://:***@host/1"
    assert mask_url("unix:///run/redis.sock?db=2&password=secret") == (
        "unix:///run/redis.sock?db=2&password=***"
    )
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"
