"""Operation quotas (guard/operations.py), in-process with the memory store: admission on a
route with ``quota=``, slots adopted by background work, ``hold`` anywhere in the app, the
lifespan state, emergency tightening, status and metrics, configuration errors. Real servers
and Redis: tests/integration/test_guard_operation_servers.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crisisctl.guard import Guard, GuardConfig, OperationQuota, RouteRule
from crisisctl.guard.config import GuardConfigError
from crisisctl.guard.lifespan import OPERATIONS_STATE_KEY as LIFESPAN_KEY
from crisisctl.guard.operations import (
    OPERATIONS_STATE_KEY,
    Operation,
    OperationRefused,
    Operations,
    operation_of,
    operations_of,
)
from crisisctl.guard.quota_store import MemoryQuotaStore
from crisisctl.guard.types import Message


def scan_service() -> tuple[Starlette, dict[str, asyncio.Event]]:
    """POST /scans starts a job that runs until its gate is set (202 at once); a body
    ``{"bad": true}`` is refused with 400 before any job starts."""
    gates: dict[str, asyncio.Event] = {}

    async def run(gate: asyncio.Event) -> None:
        await gate.wait()

    async def create(request: Request) -> JSONResponse:
        if (await request.json()).get("bad"):
            return JSONResponse({"error": "bad body"}, status_code=400)
        op = operation_of(request)
        assert op is not None and op.name == "scan"
        gate = gates[str(len(gates))] = asyncio.Event()
        op.hold_until(asyncio.create_task(run(gate)))
        return JSONResponse({"job": len(gates) - 1}, status_code=202)

    async def export(request: Request) -> JSONResponse:
        operations = operations_of(request)
        assert operations is not None
        try:
            async with operations.hold("export", key=request.query_params.get("user")):
                await asyncio.sleep(0)
        except OperationRefused as refused:
            return JSONResponse({"refused": refused.reason}, status_code=429)
        return JSONResponse({"done": True})

    app = Starlette(routes=[Route("/scans", create, methods=["POST"]), Route("/export", export)])
    return app, gates


def config(**overrides: Any) -> GuardConfig:
    settings: dict[str, Any] = {
        "operations": (OperationQuota("scan", max_concurrent=2),),
        "routes": (RouteRule("/scans", methods=("POST",), quota="scan"),),
    }
    return GuardConfig(**{**settings, **overrides})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def settle(guard: Guard, held: int) -> None:
    """Wait until the background releases have run (done-callbacks, then their tasks)."""
    async with asyncio.timeout(5):
        while True:
            if guard.operations.counters["scan"].held == held:
                return
            await asyncio.sleep(0.001)


async def test_a_route_naming_a_full_operation_quota_is_refused_at_admission_until_a_job_ends() -> (
    None
):
    service, gates = scan_service()
    guard = Guard(service, config())
    async with client(guard) as http:
        assert (await http.post("/scans", json={})).status_code == 202
        assert (await http.post("/scans", json={})).status_code == 202
        refused = await http.post("/scans", json={})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["reason"] == "operation_quota" and body["operation"] == "scan"
        assert body["error"].startswith("the operation quota 'scan' is full (2 running)")
        assert len(gates) == 2  # the refused request never reached the app
        gates["0"].set()
        await settle(guard, 1)
        assert (await http.post("/scans", json={})).status_code == 202
    counter = guard.operations.counters["scan"]
    assert (counter.admitted, counter.refused["quota"], counter.adopted) == (3, 1, 3)
    for gate in gates.values():
        gate.set()
    await settle(guard, 0)
    await guard.aclose()


async def test_a_slot_the_app_did_not_adopt_is_given_back_when_the_request_ends() -> None:
    service, gates = scan_service()
    guard = Guard(service, config())
    async with client(guard) as http:
        for _ in range(3):  # each held a slot only while its request ran
            assert (await http.post("/scans", json={"bad": True})).status_code == 400
        assert guard.operations.counters["scan"].held == 0
        assert (await http.post("/scans", json={})).status_code == 202
    # only adopted slots feed the service time that Retry-After comes from
    assert guard.operations.counters["scan"].service.samples == 0
    gates["0"].set()
    await settle(guard, 0)
    assert guard.operations.counters["scan"].service.samples == 1
    await guard.aclose()


async def test_retry_after_follows_how_long_the_operations_took() -> None:
    clock = [100.0]
    operations = Operations(
        [OperationQuota("scan", max_concurrent=1)], MemoryQuotaStore(), clock=lambda: clock[0]
    )
    op = await operations.acquire("scan")
    clock[0] += 7.2
    await op.release()
    await op.release()  # idempotent
    held = await operations.acquire("scan")
    with pytest.raises(OperationRefused) as refused:
        await operations.acquire("scan")
    assert refused.value.retry_after_s == 8 and refused.value.held == 1
    await held.release()
    assert operations.counters["scan"].released == 2


async def test_hold_gives_the_slot_back_however_the_block_ends_and_counts_per_key() -> None:
    operations = Operations(
        [OperationQuota("export", max_concurrent=3, max_concurrent_per_key=1)], MemoryQuotaStore()
    )
    with pytest.raises(RuntimeError):
        async with operations.hold("export", key="alice"):
            raise RuntimeError("the export failed")
    async with operations.hold("export", key="alice"):
        with pytest.raises(OperationRefused) as refused:
            await operations.acquire("export", key="alice")
        assert refused.value.reason == "quota_per_key"
        async with operations.hold("export", key="bob") as bobs:
            assert isinstance(bobs, Operation) and bobs.key == "bob"
    with pytest.raises(ValueError, match="pass key="):
        await operations.acquire("export")
    with pytest.raises(ValueError, match="no operation quota named 'scan'"):
        await operations.acquire("scan")
    assert operations.counters["export"].held == 0 and not operations.live


async def test_the_app_reaches_the_operations_through_the_lifespan_state() -> None:
    service, _ = scan_service()
    guard = Guard(service, config(operations=(
        OperationQuota("scan", max_concurrent=2), OperationQuota("export", max_concurrent=1),
    )))  # fmt: skip
    assert LIFESPAN_KEY == OPERATIONS_STATE_KEY
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    sent: asyncio.Queue[str] = asyncio.Queue()

    async def send(message: Message) -> None:
        await sent.put(message["type"])

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    running = asyncio.create_task(guard(lifespan, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    assert await sent.get() == "lifespan.startup.complete"
    assert state[OPERATIONS_STATE_KEY] is guard.operations
    # a server copies the lifespan state into each request's scope["state"]
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "path": "/export", "query_string": b"user=a",
        "headers": [], "client": ("127.0.0.1", 1), "state": dict(state),
    }  # fmt: skip
    statuses: list[int] = []

    async def request() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def respond(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await guard(scope, request, respond)
    assert statuses == [200] and guard.operations.counters["export"].admitted == 1
    assert operations_of({"type": "http"}) is None and operation_of(object()) is None
    await inbox.put({"type": "lifespan.shutdown"})
    assert await sent.get() == "lifespan.shutdown.complete"
    await running


async def test_emergency_mode_tightens_an_operation_quota() -> None:
    service, gates = scan_service()
    guard = Guard(service, config(operations=(
        OperationQuota("scan", max_concurrent=4, emergency_max_concurrent=1),
    )))  # fmt: skip
    guard.set_mode("emergency", reason="test")
    async with client(guard) as http:
        assert (await http.post("/scans", json={})).status_code == 202
        assert (await http.post("/scans", json={})).status_code == 429
        guard.set_mode("normal", reason="test")
        assert (await http.post("/scans", json={})).status_code == 202
    for gate in gates.values():
        gate.set()
    await settle(guard, 0)
    await guard.aclose()


async def test_status_and_metrics_show_each_operation_quota_under_its_configured_name() -> None:
    service, gates = scan_service()
    guard = Guard(service, config())
    async with client(guard) as http:
        for _ in range(3):
            await http.post("/scans", json={})
        status = (await http.get("/_crisis/status")).json()
        scan = status["policies"]["operations"]["quotas"]["scan"]
        assert scan["max_concurrent"] == 2 and scan["held_here"] == 2
        assert scan["admitted_total"] == 2 and scan["refused_total"] == {
            "quota": 1, "quota_per_key": 0,
        }  # fmt: skip
        # the 429 is in the route's request counters, as the guard's other refusals are
        assert status["shed"] == {"operation_quota": 1}
        assert [r["rejected"] for r in status["routes"] if r["route"] == "/scans"] == [
            {"operation_quota": 1}
        ]
        metrics = (await http.get("/_crisis/metrics")).text
    assert 'crisisctl_guard_operation_held{operation="scan"} 2.0' in metrics
    assert 'crisisctl_guard_operation_limit{operation="scan"} 2.0' in metrics
    assert 'crisisctl_guard_operations_total{operation="scan",outcome="quota"} 1.0' in metrics
    for gate in gates.values():
        gate.set()
    await settle(guard, 0)
    await guard.aclose()


def test_operation_quotas_are_checked_when_the_configuration_is_built() -> None:
    with pytest.raises(GuardConfigError, match="names the operation quota 'scans'"):
        GuardConfig(
            operations=(OperationQuota("scan", max_concurrent=2),),
            routes=(RouteRule("/scans", quota="scans"),),
        )
    with pytest.raises(GuardConfigError, match="needs max_concurrent"):
        OperationQuota("scan")
    with pytest.raises(GuardConfigError, match="must be 1-48 of"):
        OperationQuota("Scan Jobs", max_concurrent=1)
    with pytest.raises(GuardConfigError, match="must be unique"):
        GuardConfig(operations=(OperationQuota("a", max_concurrent=1),) * 2)
    with pytest.raises(GuardConfigError, match="whole number"):
        OperationQuota("a", max_concurrent=0)
    loaded = GuardConfig.from_dict(
        {"operations": {"scan": {"max_concurrent": 2}},
         "routes": [{"pattern": "/scans", "quota": "scan"}]}
    )  # fmt: skip
    assert loaded.operations == (OperationQuota("scan", max_concurrent=2),)
    assert Guard(lambda *a: None, loaded).operations is not None  # type: ignore[arg-type]
    assert Guard(lambda *a: None, GuardConfig()).operations is None  # type: ignore[arg-type]
    assert json.loads(json.dumps(loaded.routes[0].quota)) == "scan"


async def test_a_slot_adopted_with_async_with_is_held_for_the_block_and_released_after() -> None:
    operations = Operations([OperationQuota("scan", max_concurrent=1)], MemoryQuotaStore())
    got = await operations.admit(operations.counter("scan"), None)
    assert isinstance(got, Operation)
    with pytest.raises(asyncio.CancelledError):
        async with got:
            await got.end_of_request()  # adopted: the end of its request leaves it held
            assert operations.counters["scan"].held == 1
            raise asyncio.CancelledError  # the background work is cancelled
    assert got.released and operations.counters["scan"].held == 0


async def test_a_slot_never_released_is_given_back_after_max_hold_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    operations = Operations(
        [OperationQuota("scan", max_concurrent=1, max_hold_s=0.05)], MemoryQuotaStore()
    )
    lost = await operations.acquire("scan")  # adopted, and forgotten
    kept = None
    async with asyncio.timeout(5):
        while kept is None:
            try:
                kept = await operations.acquire("scan")
            except OperationRefused:
                await asyncio.sleep(0.01)
    assert lost.released and operations.counters["scan"].overdue == 1
    assert "held its slot for max_hold_s=0.05 s" in caplog.text
    await kept.release()  # released in time: its timer never fires
    await asyncio.sleep(0.1)
    assert operations.counters["scan"].overdue == 1
    with pytest.raises(GuardConfigError, match="max_hold_s must be > 0"):
        OperationQuota("scan", max_concurrent=1, max_hold_s=0)


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(actions=ACTIONS, total=st.integers(1, 4), per_key=st.integers(1, 3))
def test_slots_held_never_exceed_either_quota_and_every_release_frees_one(
    actions: list[tuple[str, Any]], total: int, per_key: int
) -> None:
    async def play() -> None:
        store = MemoryQuotaStore()
        operations = Operations(
            [OperationQuota("op", max_concurrent=total, max_concurrent_per_key=per_key)], store
        )
        held: list[Operation] = []
        for action, arg in actions:
            if action == "acquire":
                by_key = sum(1 for op in held if op.key == arg)
                try:
                    held.append(await operations.acquire("op", key=arg))
                    assert len(held) <= total and by_key < per_key
                except OperationRefused as refused:
                    expected = "quota" if len(held) >= total else "quota_per_key"
                    assert refused.reason == expected
                    assert len(held) >= total or by_key >= per_key
            elif held:
                op = held.pop(arg % len(held))
                await op.release()
                await op.release()  # twice: still one slot freed
            counter = operations.counters["op"]
            assert counter.held == len(held) == len(operations.live)
            assert store.count("op:op", "all") == len(held)
        for op in held:
            await op.release()
        assert not store.held and operations.counters["op"].held == 0

    asyncio.run(play())
