"""The scanning service's routes, in process (httpx's ASGI transport): validation, statuses,
and the guard of the fixed mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crisisctl.guard import Guard
from crisisctl.lab.scanner import (
    build_app,
    describe_guard,
    guard_config,
    make_app,
    settings_from_env,
)
from crisisctl.lab.scanstore import ScanStore, StoreSettings

TINY: dict[str, Any] = {"steps": 1, "step_cpu_ms": 0.1, "step_io_ms": 0.5, "read_cpu_ms": 0.0,
                        "read_io_ms": 0.0, "report_cpu_ms": 0.1, "result_kb": 1}  # fmt: skip
SICK = make_app("sick", dict(TINY))
JSON_BODIES = st.dictionaries(
    st.text(max_size=8), st.none() | st.integers() | st.text(max_size=120)
).map(lambda d: json.dumps(d).encode())
BODIES = st.one_of(st.binary(max_size=200), st.text(max_size=100).map(str.encode), JSON_BODIES)


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lab")


@pytest.fixture
async def sick() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(SICK) as client:
        yield client


async def wait_completed(client: httpx.AsyncClient, scan_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        doc: dict[str, Any] = (await client.get(f"/api/scans/{scan_id}")).json()
        if doc["status"] == "completed":
            return doc
        await asyncio.sleep(0.01)
    raise AssertionError(f"scan {scan_id} did not complete")


async def test_scan_lifecycle(sick: httpx.AsyncClient) -> None:
    created = await sick.post("/api/scans", json={"name": "  nightly  "})
    assert created.status_code == 202
    scan_id = created.json()["id"]
    assert created.json()["poll"] == f"/api/scans/{scan_id}"
    doc = await wait_completed(sick, scan_id)
    assert doc["name"] == "nightly" and doc["progress"] == 1.0 and doc["result_bytes"] == 1024
    report = await sick.get(f"/api/scans/{scan_id}/report")
    assert report.status_code == 200 and report.json()["findings"] == doc["findings"]
    stats = (await sick.get("/api/stats")).json()
    assert stats["mode"] == "sick" and "max_concurrent_scans" not in stats
    assert stats["ttl_s"] is None and stats["rss_mb"] > 0
    assert (await sick.get("/health")).json() == {"status": "ok", "mode": "sick"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"name": "broken', 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"name": 5}', 422, "name must be"),
        (b'{"name": "   "}', 422, "name must be"),
        (json.dumps({"name": "x" * 101}).encode(), 422, "at most 100"),
    ],
)
async def test_bad_scan_requests_get_4xx(
    sick: httpx.AsyncClient, body: bytes, status: int, words: str
) -> None:
    response = await sick.post(
        "/api/scans", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert words in response.json()["error"]


async def test_unknown_routes_scans_and_methods(sick: httpx.AsyncClient) -> None:
    assert (await sick.get("/api/scans/999999")).status_code == 404
    assert (await sick.get("/api/scans/999999/report")).status_code == 404
    assert (await sick.delete("/api/scans")).status_code == 405
    assert (await sick.get("/nowhere")).status_code == 404


@settings(max_examples=30, deadline=None)
@given(bodies=st.lists(BODIES, min_size=1, max_size=5))
def test_any_body_gets_202_400_or_422_never_5xx(bodies: list[bytes]) -> None:
    async def post_all() -> list[httpx.Response]:
        async with client_for(SICK) as client:
            return [await client.post("/api/scans", content=body) for body in bodies]

    for response in asyncio.run(post_all()):
        assert response.status_code in (202, 400, 422), response.text
        if response.status_code != 202:
            assert response.json()["error"].endswith(".")


async def test_report_of_a_running_scan_is_409() -> None:
    store = ScanStore(StoreSettings(workers=1, **TINY), "sick")
    gate = threading.Event()
    store.pool.submit(gate.wait, 10.0)
    try:
        async with client_for(build_app(store)) as client:
            scan_id = (await client.post("/api/scans", json={})).json()["id"]
            response = await client.get(f"/api/scans/{scan_id}/report")
            assert response.status_code == 409 and "not completed" in response.json()["error"]
    finally:
        gate.set()
        store.close()


@contextlib.asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` as a server runs it: its lifespan started and stopped, the lifespan
    state copied into each request's scope (httpx's ASGI transport does neither)."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    running = asyncio.create_task(app(lifespan, inbox.get, sent.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await sent.get())["type"] == "lifespan.startup.complete"

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    try:
        async with client_for(with_state) as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await running


async def test_fixed_mode_caps_scans_with_the_guards_operation_quota() -> None:
    store = ScanStore(StoreSettings(workers=1, ttl_s=60.0, **TINY), "fixed")
    gate = threading.Event()
    store.pool.submit(gate.wait, 10.0)
    guard = Guard(build_app(store), guard_config(token="t", ramp_s=1.0))
    try:
        async with served(guard) as client:
            first = (await client.post("/api/scans", json={})).json()["id"]
            assert (await client.post("/api/scans", json={})).status_code == 202
            refused = await client.post("/api/scans", json={})  # both scans wait for the worker
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["reason"] == "operation_quota"
            assert refused.json()["error"].startswith("the operation quota 'scan' is full")
            # bad input is told so even while the quota is full
            assert (await client.post("/api/scans", content=b"{")).status_code == 400
            assert store.stats()["scans_accepted"] == 2
            gate.set()
            await wait_completed(client, first)
            operations = guard.operations
            assert operations is not None
            async with asyncio.timeout(10):
                while True:  # the scans' slots come back as they end
                    if operations.counters["scan"].held == 0:
                        break
                    await asyncio.sleep(0.01)
            # the guard: scan creation is limited to 10 per minute per client
            statuses = [(await client.post("/api/scans", content=b"{")).status_code
                        for _ in range(7)]  # fmt: skip
            assert statuses[:6] == [400] * 6 and statuses[-1] == 429
            limited = (await client.post("/api/scans", content=b"{")).json()
            assert limited["reason"] == "rate_limited"
            status = (await client.get("/_crisis/status")).json()
            assert status["service"] == "crisisctl-guard"
            assert status["concurrency"]["mode"] == "adaptive"
            scans = status["policies"]["operations"]["quotas"]["scan"]
            assert scans["refused_total"]["quota"] == 1 and scans["released_total"] == 2
    finally:
        gate.set()
        store.close()


async def test_the_fixed_service_without_lifespan_state_says_so() -> None:
    store = ScanStore(StoreSettings(workers=1, **TINY), "fixed")
    try:
        async with client_for(Guard(build_app(store), guard_config(token="t"))) as client:
            answer = await client.post("/api/scans", json={})
            assert answer.status_code == 500 and "lifespan state" in answer.json()["error"]
    finally:
        store.close()


def test_make_app_modes_and_settings_from_env() -> None:
    assert isinstance(make_app("sick", dict(TINY)), Starlette)
    assert isinstance(make_app("fixed", dict(TINY)), Guard)
    assert settings_from_env({}) == ("sick", {})
    mode, overrides = settings_from_env(
        {"CRISISCTL_LAB_MODE": " Fixed ", "CRISISCTL_LAB_SETTINGS": '{"workers": 2}'}
    )
    assert (mode, overrides) == ("fixed", {"workers": 2})
    for env, words in (
        ({"CRISISCTL_LAB_MODE": "healthy"}, "sick or fixed"),
        ({"CRISISCTL_LAB_SETTINGS": "{"}, "not valid JSON"),
        ({"CRISISCTL_LAB_SETTINGS": "[]"}, "JSON object"),
    ):
        with pytest.raises(ValueError, match=words):
            settings_from_env(env)
    with pytest.raises(ValueError, match="unknown scan store setting"):
        make_app("sick", {"threads": 3})


def test_describe_guard_names_every_limit() -> None:
    text = describe_guard()
    assert "POST /api/scans: 10/minute per client, timeout 5 s" in text
    assert "operation quota scan: at most 2 at once" in text
    assert "/api/scans/{scan_id}/report: timeout 5 s, priority low" in text
    assert "other routes 50/second;1500/minute per client" in text
    assert "adaptive concurrency limit 6–64" in text
