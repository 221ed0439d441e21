"""Concurrency quotas in one process: Retry-After from service time, the policy, the layer, and
the memory store's slot bookkeeping against a model (hypothesis)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crisisctl.guard.config import RouteRule, TierConfig
from crisisctl.guard.quota import (
    CLIENT_SCOPE_KEY,
    Admission,
    QuotaLayer,
    QuotaPolicy,
    QuotaRefusal,
    ServiceTime,
    counter_name,
)
from crisisctl.guard.quota_store import Lease, MemoryQuotaStore, Refused
from crisisctl.guard.tiers import ApiKeyTable, ClientIdentity, TierTable
from crisisctl.guard.types import Message, Scope

SCANS = RouteRule("/api/scans", methods=("POST",), max_concurrent=2, max_concurrent_per_key=1)


def http(method: str = "POST", path: str = "/api/scans", key: bytes | None = None) -> Scope:
    headers = [(b"x-api-key", key)] if key is not None else []
    return {"type": "http", "method": method, "path": path, "headers": headers,
            "client": ("127.0.0.1", 4000)}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_is_one_second_before_any_sample_and_the_mean_rounded_up_after() -> None:
    service = ServiceTime(alpha=0.5)
    assert service.retry_after_s() == 1
    service.observe(2.2)
    assert service.retry_after_s() == 3
    service.observe(4.2)  # mean 3.2
    assert service.retry_after_s() == 4
    service.observe(float("nan"))
    service.observe(-1.0)
    assert service.samples == 2


@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_retry_after_bounds(durations: list[float]) -> None:
    service = ServiceTime(alpha=0.3, max_s=300.0)
    for seconds in durations:
        service.observe(seconds)
    retry = service.retry_after_s()
    assert 1 <= retry <= 300
    assert service.mean_s is not None
    assert min(min(durations), 300.0) - 1e-6 <= service.mean_s <= min(max(durations), 300.0) + 1e-6
    assert retry == max(1, math.ceil(service.mean_s - 1e-9))


# --- the memory store against a model ----------------------------------------------------------


class MemoryStoreModel(RuleBasedStateMachine):
    """Random acquire/release sequences: the store's counts always equal the model's."""

    GROUP = "POST /api/scans"
    NAMES = ("all", "k:a", "k:b")

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryQuotaStore()
        self.limits = {"all": 3, "k:a": 2, "k:b": 1}
        self.leases: list[Lease] = []
        self.model: dict[str, int] = dict.fromkeys(self.NAMES, 0)

    @rule(key=st.sampled_from(["k:a", "k:b"]), route_too=st.booleans())
    def acquire(self, key: str, route_too: bool) -> None:
        names = (["all"] if route_too else []) + [key]
        got = self.store.acquire_now(self.GROUP, [(n, self.limits[n]) for n in names])
        full = [n for n in names if self.model[n] >= self.limits[n]]
        if full:
            assert isinstance(got, Refused)
            assert got.name == full[0] and got.held == self.model[full[0]]
        else:
            assert isinstance(got, Lease)
            self.leases.append(got)
            for n in names:
                self.model[n] += 1

    @precondition(lambda self: bool(self.leases))
    @rule(index=st.integers(0, 100), twice=st.booleans())
    def release(self, index: int, twice: bool) -> None:
        lease = self.leases.pop(index % len(self.leases))
        self.store.release_now(lease)
        if twice:  # idempotent
            self.store.release_now(lease)
        for n in lease.names:
            self.model[n] -= 1

    @invariant()
    def counts_match(self) -> None:
        for n in self.NAMES:
            assert self.store.count(self.GROUP, n) == self.model[n]
            assert self.model[n] <= self.limits[n]
        # empty counters are dropped: memory stays bounded by what is held
        assert all(self.store.held.values())


TestMemoryStoreModel = MemoryStoreModel.TestCase


# --- the policy --------------------------------------------------------------------------------


async def test_route_quota_refuses_the_third_and_admits_after_one_finishes() -> None:
    clock = Clock()
    policy = QuotaPolicy([RouteRule("/api/scans", methods=("POST",), max_concurrent=2)],
                         MemoryQuotaStore(), clock=clock)  # fmt: skip
    first, second = await policy.admit(http()), await policy.admit(http())
    assert isinstance(first, Admission) and isinstance(second, Admission)
    third = await policy.admit(http())
    assert isinstance(third, QuotaRefusal)
    assert (third.reason, third.status, third.retry_after_s, third.held) == ("quota", 429, 1, 2)
    assert await policy.admit(http("GET")) is None  # another method: no quota
    assert await policy.admit(http(path="/api/other")) is None
    clock.now += 4.5
    await policy.finish(first)
    again = await policy.admit(http())
    assert isinstance(again, Admission)
    refused = await policy.admit(http())
    assert isinstance(refused, QuotaRefusal) and refused.retry_after_s == 5  # 4.5 s, rounded up
    status: Any = policy.describe()
    route = status["routes"]["POST /api/scans"]
    assert route["admitted_total"] == 3 and route["refused_total"]["quota"] == 2
    assert route["in_flight_here"] == 2


async def test_a_caller_may_pass_the_identity_and_the_matched_rule() -> None:
    calls: list[Scope] = []

    def key_func(scope: Scope) -> str:
        calls.append(scope)
        return "from-key-func"

    policy = QuotaPolicy([RouteRule("/health"), SCANS], MemoryQuotaStore(),
                         tiers=TierTable(key_func=key_func))  # fmt: skip
    assert list(policy.by_route) == [SCANS]
    first = await policy.admit(http(), ClientIdentity("carol", "free"))
    assert isinstance(first, Admission) and first.identity.key == "carol" and calls == []
    again = await policy.admit_rule(policy.by_route[SCANS], ClientIdentity("carol", "free"))
    assert isinstance(again, QuotaRefusal) and again.reason == "quota_per_key"
    other = await policy.admit(http())
    assert isinstance(other, Admission) and other.identity.key == "from-key-func"


async def test_per_key_quota_and_tiers() -> None:
    tiers = TierTable(
        [TierConfig("pro", max_concurrent_per_key=2)],
        "free",
        key_func=ApiKeyTable({"alice": "free", "bob": "pro"}),
    )
    policy = QuotaPolicy([SCANS], MemoryQuotaStore(), tiers=tiers)
    a1 = await policy.admit(http(key=b"alice"))
    assert isinstance(a1, Admission) and a1.identity.tier == "free"
    a2 = await policy.admit(http(key=b"alice"))
    assert isinstance(a2, QuotaRefusal) and a2.reason == "quota_per_key"
    b1 = await policy.admit(http(key=b"bob"))
    assert isinstance(b1, Admission) and b1.identity.tier == "pro"
    b2 = await policy.admit(http(key=b"bob"))
    assert isinstance(b2, QuotaRefusal) and b2.reason == "quota"  # the route's 2 are taken
    await policy.finish(a1)
    b3 = await policy.admit(http(key=b"bob"))
    assert isinstance(b3, Admission)  # bob's second slot: pro allows 2 per key


async def test_emergency_tightens_route_and_key_quotas() -> None:
    emergency = False
    rules = [
        RouteRule("/a", max_concurrent=4, max_concurrent_per_key=4),
        RouteRule("/b", max_concurrent=4, emergency_max_concurrent=3),
    ]
    policy = QuotaPolicy(rules, MemoryQuotaStore(), emergency=lambda: emergency,
                         emergency_factor=0.5)  # fmt: skip
    a, b = policy.rules
    assert policy.limits(a, "free", False) == (4, 4)
    assert policy.limits(a, "free", True) == (2, 2)
    assert policy.limits(b, "free", True) == (3, None)
    emergency = True
    taken = [await policy.admit(http(path="/a")) for _ in range(3)]
    assert [type(t).__name__ for t in taken] == ["Admission", "Admission", "QuotaRefusal"]


def test_long_keys_are_stored_as_a_digest() -> None:
    assert counter_name("10.0.0.1") == "k:10.0.0.1"
    long = counter_name("x" * 1000)
    assert long.startswith("k:sha256:") and len(long) < 50


# --- the layer ---------------------------------------------------------------------------------


class HeldApp:
    """Each request waits until released; raises when asked to."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()
        self.tiers: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.entered += 1
        self.arrivals.put_nowait(scope["path"])
        identity = scope.get(CLIENT_SCOPE_KEY)
        self.tiers.append(identity.tier if identity is not None else "-")
        await self.gate.wait()
        if scope["path"] == "/api/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def call(app: Any, scope: Scope) -> tuple[int, dict[bytes, bytes], bytes]:
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start["headers"]), body


async def test_layer_answers_429_with_retry_after_and_frees_slots_on_error_and_cancel() -> None:
    inner = HeldApp()
    store = MemoryQuotaStore()
    layer = QuotaLayer(inner, [RouteRule("/api/*", max_concurrent=2)], store)
    async with asyncio.timeout(5):
        one = asyncio.create_task(call(layer, http(path="/api/scans")))
        two = asyncio.create_task(call(layer, http(path="/api/boom")))
        for _ in range(2):
            await inner.arrivals.get()
        status, headers, body = await call(layer, http(path="/api/scans"))
        assert status == 429 and headers[b"retry-after"] == b"1"
        assert json.loads(body)["reason"] == "quota"
        inner.gate.set()
        assert (await one)[0] == 200
        with pytest.raises(RuntimeError):
            await two
        assert store.held == {}  # the raising request gave its slot back
        inner.gate.clear()
        hung = asyncio.create_task(call(layer, http(path="/api/scans")))
        await inner.arrivals.get()
        hung.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await hung
        await asyncio.sleep(0)
        assert store.held == {}
    assert inner.tiers == ["free", "free", "free"]


async def test_layer_passes_other_scopes_and_unmatched_paths_through() -> None:
    inner = HeldApp()
    inner.gate.set()
    layer = QuotaLayer(inner, [RouteRule("/api/scans", max_concurrent=1)], MemoryQuotaStore())
    for _ in range(3):
        assert (await call(layer, http(path="/other")))[0] == 200
    with pytest.raises(TypeError):
        QuotaLayer(inner, [SCANS])
