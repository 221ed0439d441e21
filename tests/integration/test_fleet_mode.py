"""One mode for the whole fleet: guards on one Redis (or Redis Cluster) share mode and history.

In-process guards (each with its own clients, as separate servers have) on the test Redis
(CRISISCTL_TEST_REDIS_URL), on the test Redis Cluster, and on throw-away redis-servers that
the tests kill and restart. test_fleet_servers.py does the same with real uvicorn processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from redis_services import (
    CLUSTER_URL,
    REDIS_URL,
    RedisServer,
    delete_prefix,
    require_cluster,
    require_redis,
    unique_prefix,
)

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.fleet_store import fleet_keys
from crisisctl.guard.modes import EMERGENCY, NORMAL, RECOVERING
from crisisctl.guard.types import Receive, Scope, Send

GuardFactory = Callable[..., Awaitable[Guard]]


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _until(check: Callable[[], bool], within_s: float) -> float:
    """Seconds until `check()` held; fails after `within_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within_s:
            pytest.fail(f"not reached within {within_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture(params=["redis", "redis-cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return require_redis(REDIS_URL) if request.param == "redis" else require_cluster(CLUSTER_URL)


@pytest.fixture
def prefix(shared_url: str) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefix(shared_url, value)


@pytest.fixture
async def make_guard() -> AsyncIterator[GuardFactory]:
    """Builds guards like servers build them (fleet loaded before serving); closes them."""
    guards: list[Guard] = []
    namespaces: set[tuple[str, str]] = set()

    async def build(url: str, prefix: str, **overrides: object) -> Guard:
        namespaces.add((url, prefix))
        config = GuardConfig.from_dict(
            {"storage": url, "storage_prefix": prefix, "token": "t", **overrides}
        )
        guard = Guard(_ok, config)
        guards.append(guard)
        await guard.fleet.ready()
        return guard

    yield build
    for guard in guards:
        await guard.aclose()
    for url, prefix in namespaces:  # once no guard can write a heartbeat any more
        with contextlib.suppress(redis.RedisError, OSError):
            delete_prefix(url, prefix)


async def test_a_switch_reaches_every_guard_within_a_second_and_is_confirmed(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    guards = [await make_guard(shared_url, prefix) for _ in range(3)]
    assert all(g.modes.scope == "fleet" for g in guards)

    started = time.monotonic()
    outcome = await guards[0].switch_mode(EMERGENCY, actor="alice", reason="db melting")
    assert outcome["stored"] is True
    assert outcome["confirmed"] == outcome["instances"] == 3
    await _until(lambda: all(g.mode == EMERGENCY for g in guards), 1.0)
    assert time.monotonic() - started < 1.0

    for guard in guards:
        described = guard.modes.describe()
        assert described["switch_id"] == outcome["switch_id"]
        (change,) = described["history"]  # type: ignore[misc]
        assert change["actor"] == "alice" and change["reason"] == "db melting"
        # the mode's effect is in force on every instance, not just its name
        assert guard.concurrency is None or guard.concurrency.factor < 1.0
        assert described["fleet"]["state"] == "ok"  # type: ignore[index]


async def test_python_set_mode_reaches_the_fleet_in_the_background(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    one, two = [await make_guard(shared_url, prefix) for _ in range(2)]
    one.set_mode(EMERGENCY, actor="runbook", reason="auto")
    assert one.mode == EMERGENCY  # at once, locally
    await _until(lambda: two.mode == EMERGENCY, 1.0)


async def test_a_switch_made_before_the_loop_runs_is_stored_at_start_with_the_history(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    first = await make_guard(shared_url, prefix)
    await first.switch_mode(EMERGENCY, actor="alice", reason="first")
    config = GuardConfig(storage=shared_url, storage_prefix=prefix, token="t")
    late = Guard(_ok, config)
    try:
        # as at import time: no event loop in this thread, the sync task will store it
        await asyncio.to_thread(late.set_mode, RECOVERING, actor="boot", reason="second")
        await late.fleet.ready()
        await _until(lambda: first.mode == RECOVERING, 1.5)
        await _until(lambda: len(late.modes.history) == 2, 1.5)
        assert [(c.switch_id, c.reason) for c in late.modes.history] == [
            (1, "first"),
            (2, "second"),
        ]
    finally:
        await late.aclose()


async def test_a_missed_message_heals_by_the_periodic_re_read(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    guards = [await make_guard(shared_url, prefix) for _ in range(2)]
    # a switch stored by someone whose PUBLISH never arrived
    keys = fleet_keys(prefix)
    record = json.dumps(
        {"switch_id": 7, "mode": "emergency", "previous": "normal", "actor": "lost",
         "reason": "message dropped", "source": "http", "at_us": str(int(time.time() * 1e6))}
    )  # fmt: skip
    client = redis.asyncio.cluster.RedisCluster.from_url(
        shared_url.replace("+cluster", "")
    ) if "+cluster" in shared_url else redis.asyncio.from_url(shared_url)  # fmt: skip
    try:
        await client.set(keys.mode, record)
        await client.lpush(keys.history, record)
        await client.set(keys.seq, 7)
    finally:
        await client.aclose()
    took = await _until(lambda: all(g.mode == EMERGENCY for g in guards), 1.5)
    assert took <= 1.0 + 0.3  # one re-read interval, plus a round trip
    for guard in guards:
        assert guard.modes.switch_id == 7
        assert [c.actor for c in guard.modes.history] == ["lost"]


async def test_mode_and_history_survive_a_restart(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    first = await make_guard(shared_url, prefix, emergency={"ramp_s": 60})
    await first.switch_mode(EMERGENCY, actor="alice", reason="spike")
    await first.switch_mode(RECOVERING, actor="bob", reason="fixed")
    await first.aclose()

    await asyncio.sleep(0.3)
    again = await make_guard(shared_url, prefix, emergency={"ramp_s": 60})
    assert again.mode == RECOVERING
    assert [(c.mode, c.actor, c.reason) for c in again.modes.history] == [
        (EMERGENCY, "alice", "spike"),
        (RECOVERING, "bob", "fixed"),
    ]
    # the ramp counts from the switch, not from the restart
    assert again.modes.ramp_progress() >= 0.3 / 60


async def test_the_end_of_a_recovery_ramp_is_stored_once_for_the_fleet(
    make_guard: GuardFactory, shared_url: str, prefix: str
) -> None:
    guards = [await make_guard(shared_url, prefix, emergency={"ramp_s": 0.3}) for _ in range(3)]
    for guard in guards:  # a request starts each guard's ticker (which ends the ramp)
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/ok")).status_code == 200
    await guards[0].switch_mode(RECOVERING, actor="bob", reason="fixed")
    await _until(lambda: all(g.mode == NORMAL for g in guards), 3.0)
    await asyncio.sleep(1.2)  # every instance has re-read the fleet since
    for guard in guards:
        ends = [c for c in guard.modes.history if c.source == "ramp"]
        assert len(ends) == 1 and ends[0].switch_id == 2
        assert guard.modes.switch_id == 2


async def test_without_redis_the_mode_is_this_process_only() -> None:
    guard = Guard(_ok, GuardConfig(token="t"))
    try:
        assert guard.fleet is None
        outcome = await guard.switch_mode(EMERGENCY, actor="alice")
        assert outcome["scope"] == "process"
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            status = (await http.get("/_crisis/status")).json()
            assert status["mode_scope"] == "process"
            assert status["mode"]["scope"] == "process"
            answer = await http.post(
                "/_crisis/mode", json={"mode": "normal"}, headers={"authorization": "Bearer t"}
            )
            assert answer.json()["switch"] == {"scope": "process", "pid": status["pid"]}
    finally:
        await guard.aclose()


# -- Redis outages -----------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_down_keeps_the_local_mode_says_degraded_and_heals(
    make_guard: GuardFactory, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    one, two = [await make_guard(redis_server.url, prefix) for _ in range(2)]
    redis_server.stop()

    outcome = await one.switch_mode(EMERGENCY, actor="alice", reason="during the outage")
    assert outcome["stored"] is False and outcome["degraded"] is True
    assert one.mode == EMERGENCY  # the answering instance switched anyway
    assert two.mode == NORMAL
    fleet = one.modes.describe()["fleet"]
    assert fleet["state"] == "degraded" and fleet["unstored_switch"] is True  # type: ignore[index]
    await _until(lambda: two.fleet.healthy is False, 3.0)  # the other notices at its next beat

    redis_server.start()  # empty: no record, no history
    await _until(lambda: two.mode == EMERGENCY, 4.0)  # the switch is stored once Redis answers
    assert one.modes.switch_id == two.modes.switch_id == 1
    assert one.fleet.healthy and two.fleet.healthy
    assert [c.reason for c in two.modes.history] == ["during the outage"]


async def test_a_fleet_record_lost_in_redis_is_stored_again(
    make_guard: GuardFactory, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    one, two = [await make_guard(redis_server.url, prefix) for _ in range(2)]
    await one.switch_mode(EMERGENCY, actor="alice")
    await _until(lambda: two.mode == EMERGENCY, 1.0)
    redis_server.stop()
    redis_server.start()  # restarted without persistence: the fleet's record is gone

    probe = redis.asyncio.from_url(redis_server.url)
    try:
        started = time.monotonic()
        while await probe.get(fleet_keys(prefix).mode) is None:
            assert time.monotonic() - started < 4.0, "the record was not stored again"
            await asyncio.sleep(0.05)
        third = await make_guard(redis_server.url, prefix)
        assert third.mode == EMERGENCY  # a new instance starts in the fleet's mode
        await asyncio.sleep(1.2)
        assert one.mode == two.mode == EMERGENCY
        assert one.modes.switch_id == two.modes.switch_id == third.modes.switch_id
        restored = [c for c in third.modes.history if c.source == "fleet-restore"]
        assert len(restored) == 1  # one instance stored it, the others adopted it
    finally:
        await probe.aclose()
