"""The control surface's background refresh (guard/refresher.py) and the status document's
concurrency member (guard/limits_json.py): a read takes in a few changes itself and serves the
rest no older than its bound; the background refresh takes in the rest while the documents
are read, and stops when they are not; the concurrency member equals the limiters'
description, re-encoding only the limiters that changed. Work is counted, never timed."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.config import ConcurrencyConfig, GuardConfigError
from crisisctl.guard.digest import MIN_INLINE
from crisisctl.guard.refresher import IDLE_S
from crisisctl.guard.types import Receive, Scope, Send


class Template:
    def __init__(self, path: str) -> None:
        self.path = path


class RoutedApp:
    def __init__(self, count: int) -> None:
        self.routes = [Template(f"/r{i}/{{id}}") for i in range(count)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def build(templates: int, **config: Any) -> Guard:
    config.setdefault("token", "")
    config.setdefault("control_rate_limit", None)
    return Guard(RoutedApp(templates), GuardConfig(**config))


def serve(guard: Guard) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=guard, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://guard")


async def status(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.get("/_crisis/status")
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def requests_per_route(document: dict[str, Any]) -> dict[str, int]:
    return {r["route"]: r["requests"] for r in document["routes"]}


async def test_a_document_being_read_is_refreshed_in_the_background() -> None:
    guard = build(10, control_refresh_s=0.05)
    digest = guard.control_surface.digest
    async with serve(guard) as http:
        for i in range(10):
            await http.get(f"/r{i}/1")
        await status(http)
        for stats in guard.state.routes.values():
            for value in (1500, 2500, 90_000):
                stats.latency.record_us(value)  # the public recording API
        renders = digest.renders
        for _ in range(100):  # (bounded: 2 s at most)
            await asyncio.sleep(0.02)
            if digest.renders - renders >= 10:
                break
        assert digest.renders - renders == 10  # every changed route, without any read
        document = await status(http)
        assert digest.renders - renders == 10  # the read found nothing left to take in
    assert [r["latency_ms"]["count"] for r in document["routes"]] == [4] * 10
    assert guard.control_surface.refresher.background_runs >= 1


async def test_a_read_takes_in_a_few_changes_and_serves_the_rest_within_the_bound() -> None:
    guard = build(40)
    clock = Clock()
    guard._clock = clock  # the digest and the refresher read time through the state view
    refresher = guard.control_surface.refresher
    refresher.timer = False  # no background refresh: only reads take changes in
    refresher.read_budget_s = 1e-9  # so a read takes in exactly MIN_INLINE changed routes
    async with serve(guard) as http:
        for i in range(40):
            await http.get(f"/r{i}/1")
        first = await status(http)  # the first read completes the refresh itself
        assert set(requests_per_route(first).values()) == {1}
        for i in range(40):
            await http.get(f"/r{i}/2")
        clock.now += refresher.stale_s / 2
        partial = await status(http)
        counts = requests_per_route(partial)
        assert sorted(counts.values()) == [1] * (40 - MIN_INLINE) + [2] * MIN_INLINE
        # the guard-wide figures are those of the routes as shown: one consistent document
        assert partial["requests"]["total"] == sum(counts.values())
        clock.now += refresher.stale_s  # the last complete refresh is now too old
        full = await status(http)
        assert set(requests_per_route(full).values()) == {2}
        assert refresher.age_s("status") == 0.0


async def test_with_no_background_refresh_every_read_completes_it() -> None:
    guard = build(40, control_refresh_s=0)
    refresher = guard.control_surface.refresher
    refresher.read_budget_s = 1e-9
    async with serve(guard) as http:
        for i in range(40):
            await http.get(f"/r{i}/1")
        await status(http)
        for i in range(40):
            await http.get(f"/r{i}/2")
        assert set(requests_per_route(await status(http)).values()) == {2}
    assert refresher.background_runs == 0


async def test_the_background_refresh_stops_when_nobody_reads() -> None:
    guard = build(2, control_refresh_s=0.02)
    clock = Clock()
    guard._clock = clock
    refresher = guard.control_surface.refresher
    async with serve(guard) as http:
        await http.get("/r0/1")
        await http.get("/_crisis/metrics")
        for _ in range(100):
            await asyncio.sleep(0.02)
            if refresher.background_runs >= 2:
                break
        assert refresher.background_runs >= 2
        clock.now += IDLE_S + 1  # no read for longer than IDLE_S
        await asyncio.sleep(0.1)
        runs = refresher.background_runs
        await asyncio.sleep(0.1)
        assert refresher.background_runs == runs
        assert not refresher.watched()


@pytest.mark.parametrize("value", [-1.0, math.nan, 61.0, "1", True])
def test_control_refresh_s_is_checked(value: Any) -> None:
    with pytest.raises(GuardConfigError, match="control_refresh_s"):
        GuardConfig(control_refresh_s=value)
    with pytest.raises(GuardConfigError, match="control_refresh_s"):
        GuardConfig.from_dict({"control_refresh_s": value})


async def test_the_concurrency_member_equals_the_limiters_description() -> None:
    guard = build(30)  # per-route adaptive limits under a guard-wide ceiling (the default)
    conc = guard.state.concurrency
    assert conc is not None and conc.ceiling_only
    limits = guard.control_surface.limits
    async with serve(guard) as http:
        for i in range(30):
            await http.get(f"/r{i}/1")
        document = await status(http)
        described = json.loads(json.dumps(conc.describe(), default=str))
        assert document["concurrency"] == described
        assert len(document["concurrency"]["routes"]) == 30
        encoded = limits.encoded
        await status(http)
        assert limits.encoded == encoded  # nothing changed: nothing re-encoded
        conc.children["/r3/{id}"].shed_queue_full += 2  # (as a refused request would)
        conc.children["/r5/{id}"].limit += 1.0
        document = await status(http)
        assert limits.encoded == encoded + 2
        assert document["concurrency"] == json.loads(json.dumps(conc.describe(), default=str))
        assert document["concurrency"]["shed_queue_full"] == 2


async def test_the_concurrency_member_without_per_route_limits() -> None:
    cases = ((ConcurrencyConfig(scope="service"), None), (ConcurrencyConfig(mode="off"), "off"))
    for concurrency, expected in cases:
        guard = build(2, concurrency=concurrency)
        async with serve(guard) as http:
            await http.get("/r0/1")
            document = await status(http)
        conc = guard.state.concurrency
        if expected == "off":
            assert conc is None
            assert document["concurrency"] == {"mode": "off"}
        else:
            assert conc is not None
            assert document["concurrency"] == json.loads(json.dumps(conc.describe()))
            assert "routes" not in document["concurrency"]


async def test_a_read_re_encodes_a_few_changed_limiters_and_the_refresh_the_rest() -> None:
    guard = build(30)
    clock = Clock()
    guard._clock = clock
    conc = guard.state.concurrency
    assert conc is not None
    refresher = guard.control_surface.refresher
    refresher.timer = False
    refresher.read_budget_s = 1e-9
    limits = guard.control_surface.limits
    async with serve(guard) as http:
        for i in range(30):
            await http.get(f"/r{i}/1")
        await status(http)
        for limiter in conc.children.values():
            limiter.shed_queue_timeout += 1  # every route limiter changed
        encoded = limits.encoded
        partial = (await status(http))["concurrency"]["routes"]
        assert limits.encoded - encoded == MIN_INLINE
        assert sorted(r["shed_queue_timeout"] for r in partial.values()) == (
            [0] * (30 - MIN_INLINE) + [1] * MIN_INLINE
        )
        await refresher.refresh_now()  # the background refresh re-encodes the rest
        assert limits.encoded - encoded == 30
        document = await status(http)
    assert document["concurrency"] == json.loads(json.dumps(conc.describe(), default=str))
