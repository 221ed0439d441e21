"""The guard's request path in-process (httpx.ASGITransport): fast checks of the order of the
policies, what a refusal consumes, and that the guard's own failures never reach the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from crisisctl.guard import BreakerConfig, ConcurrencyConfig, Guard, GuardConfig, RouteRule
from crisisctl.guard.types import Receive, Scope, Send

Handler = Callable[[Scope], Any]


class App:
    """A bare ASGI app: `behaviour[path]` decides what each path does."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.behaviour: dict[str, Handler] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.calls[path] = self.calls.get(path, 0) + 1
        status, body = 200, b"ok"
        handler = self.behaviour.get(path)
        if handler is not None:
            status, body = await handler(scope)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def app() -> AsyncIterator[App]:
    yield App()


async def serve(guard: Guard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://guard")


async def test_refusals_come_in_order_and_consume_nothing_downstream(app: App) -> None:
    config = GuardConfig(
        token="",
        routes=(RouteRule("/low", priority="low", rate_limit="2/minute"),
                RouteRule("/api", rate_limit="2/minute")),
        breaker=BreakerConfig(min_calls=2, window_s=10, open_s=60),
    )  # fmt: skip
    guard = Guard(app, config)
    try:
        async with await serve(guard) as http:
            guard.set_mode("emergency", actor="test", reason="order")
            # emergency shedding comes first: it consumes no rate-limit budget
            for _ in range(3):
                response = await http.get("/low")
                assert response.status_code == 503
                assert response.json()["reason"] == "emergency"
            guard.set_mode("normal", actor="test")
            assert [(await http.get("/low")).status_code for _ in range(3)] == [200, 200, 429]
            assert app.calls["/low"] == 2

            # an open breaker answers before the rate limiter: no budget used while open
            async def fail(scope: Scope) -> tuple[int, bytes]:
                return 500, b"down"

            app.behaviour["/api"] = fail
            assert [(await http.get("/api")).status_code for _ in range(2)] == [500, 500]
            assert guard.breakers["/api"].state == 1
            for _ in range(5):
                response = await http.get("/api")
                assert response.json()["reason"] == "circuit_open"
            assert app.calls["/api"] == 2
            assert guard.route_stats["/api"].rejected == {"circuit_open": 5}
    finally:
        await guard.aclose()


async def test_failing_key_function_never_reaches_the_app(app: App) -> None:
    def key(scope: Scope) -> str:
        raise LookupError("no key")

    for limits in ("5/second", "5/second;50/minute"):  # the fast path and the general one
        guard = Guard(app, GuardConfig(token="", rate_limit=limits, key_func=key))
        try:
            async with await serve(guard) as http:
                statuses = [(await http.get("/x")).status_code for _ in range(10)]
            assert statuses == [200] * 10
            assert guard.internal_errors == 10
        finally:
            await guard.aclose()


async def test_policy_names_do_not_depend_on_request_order(app: App) -> None:
    rules = (RouteRule("/a", rate_limit="1/second"), RouteRule("/b", rate_limit="2/second"))
    names = []
    for order in (("/a", "/b"), ("/b", "/a")):
        guard = Guard(app, GuardConfig(token="", routes=rules, rate_limit="9/second"))
        try:
            async with await serve(guard) as http:
                for path in (*order, "/c"):
                    await http.get(path)
            names.append(sorted(policy.name for policy in guard.policies.values()))
        finally:
            await guard.aclose()
    assert names[0] == names[1] == ["default", "rule0:/a", "rule1:/b"]


async def test_timeout_swallowed_by_the_app_leaves_no_trace(app: App) -> None:
    """An app may catch the CancelledError of its timeout and answer anyway. The guard must
    then forget that task, or a later, genuine cancellation in the same task (ASGITransport
    serves every request in the caller's task) would be taken for a timeout and swallowed."""

    async def stubborn(scope: Scope) -> tuple[int, bytes]:
        try:
            await asyncio.sleep(2.0)
        except asyncio.CancelledError:
            return 200, b"late but here"
        return 200, b"in time"

    async def cancelled(scope: Scope) -> tuple[int, bytes]:
        raise asyncio.CancelledError

    app.behaviour["/stubborn"] = stubborn
    app.behaviour["/cancelled"] = cancelled
    guard = Guard(app, GuardConfig(token="", timeout_s=0.1))
    try:
        async with await serve(guard) as http:
            response = await http.get("/stubborn")
            assert response.text == "late but here"
            assert not guard._timed_out
            assert all(deadline.task is None for deadline in guard._deadlines)
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # the app swallowed it; don't let it linger in the test's task
            with pytest.raises(asyncio.CancelledError):
                await http.get("/cancelled")
    finally:
        await guard.aclose()


async def test_timeout_cancels_and_answers_504(app: App) -> None:
    cancelled = []

    async def slow(scope: Scope) -> tuple[int, bytes]:
        try:
            await asyncio.sleep(2.0)
        except asyncio.CancelledError:
            cancelled.append(scope["path"])
            raise
        return 200, b"done"

    app.behaviour["/slow"] = slow
    guard = Guard(app, GuardConfig(token="", routes=(RouteRule("/slow", timeout_s=0.1),)))
    loop = asyncio.get_running_loop()
    try:
        async with await serve(guard) as http:
            start = loop.time()
            response = await http.get("/slow")
            elapsed = loop.time() - start
            assert response.status_code == 504
            assert 0.09 <= elapsed < 0.5
            assert cancelled == ["/slow"]
            assert (await http.get("/fast")).status_code == 200  # the task is usable again
        assert guard.route_stats["/slow"].rejected == {"timeout": 1}
        assert guard.breakers["/slow"].window_counts(loop.time())[1] == 1
    finally:
        await guard.aclose()


async def test_deadlines_end_with_the_response_start_and_the_list_stays_bounded(
    app: App,
) -> None:
    """Deadlines live in a list the ticker compacts; a request whose response has started
    can no longer time out; a request that ends as the newest entry takes its deadline out at
    once (down to two entries: the list's array is kept), others are dropped by compaction,
    and a long list is compacted on the request path without waiting for the ticker."""
    started = {"/held1": asyncio.Event(), "/held2": asyncio.Event()}
    release = {"/held1": asyncio.Event(), "/held2": asyncio.Event()}

    async def held(scope: Scope) -> tuple[int, bytes]:
        started[scope["path"]].set()
        await release[scope["path"]].wait()
        return 200, b"held"

    app.behaviour["/held1"] = app.behaviour["/held2"] = held
    guard = Guard(app, GuardConfig(token="", timeout_s=30.0))
    try:
        async with await serve(guard) as http:
            for _ in range(5):
                assert (await http.get("/x")).status_code == 200
            # each ended as the newest entry: taken out at once (two stay, finished)
            assert len(guard._deadlines) == 2
            assert all(deadline.task is None for deadline in guard._deadlines)
            first = asyncio.ensure_future(http.get("/held1"))
            await started["/held1"].wait()
            second = asyncio.ensure_future(http.get("/held2"))
            await started["/held2"].wait()
            finished, live = guard._deadlines[-2:]
            assert finished.task is not None and live.task is not None
            release["/held1"].set()
            assert (await first).text == "held"  # not the newest: left to compaction
            assert finished.task is None and guard._deadlines[-2:] == [finished, live]
            guard._timeouts.expire(live.at - 1.0)  # the ticker: only the live one stays
            assert guard._deadlines == [live]
            assert not guard._timed_out
            guard._deadlines.insert(0, finished)  # (as if the ticker had not run yet)
            guard._deadlines_compact_at = 2  # compact on the request path from 2 entries on
            for _ in range(3):
                assert (await http.get("/x")).status_code == 200
            assert guard._deadlines[0] is live and len(guard._deadlines) == 2
            assert guard._deadlines[1].task is None
            release["/held2"].set()
            assert (await second).text == "held"
            assert live.task is None
    finally:
        await guard.aclose()


def test_housekeeping_closes_the_adaptive_window_of_a_quiet_service() -> None:
    # the request path checks windows by sample count only; a window that never reaches ten
    # samples is closed by the ticker once it is a second old
    guard = Guard(App(), GuardConfig(token="", concurrency=ConcurrencyConfig(scope="service")))
    conc = guard.concurrency
    assert conc is not None
    now = conc.window_start + 2.0
    conc.window_sum, conc.window_n = 0.03, 3
    guard._chores.housekeeping(now)
    assert conc.window_n == 0
    assert conc.updates == 1
    assert conc.last_rtt == pytest.approx(0.01)


async def test_unknown_methods_share_one_label_and_grow_nothing(app: App) -> None:
    guard = Guard(app, GuardConfig(token="", routes=(RouteRule("/x"),)))
    try:
        async with await serve(guard) as http:
            for i in range(500):
                await http.request(f"X{i}", "/x")
            await http.get("/x")
        assert set(guard.route_stats["/x"].by_method) == {"OTHER", "GET"}
        assert guard.route_stats["/x"].by_method["OTHER"][2] == 500
        assert set(guard._route_cache) == {"OTHER", "GET"}
        text = (await _metrics(guard)).splitlines()
        assert len([line for line in text if line.startswith("crisisctl_http_requests_total")]) == 2
    finally:
        await guard.aclose()


async def _metrics(guard: Guard) -> str:
    async with await serve(guard) as http:
        return (await http.get("/_crisis/metrics")).text


# -- a client that leaves is not the route's failure --------------------------------------------


class ClientDisconnect(Exception):
    """Named like Starlette's: raised by an app whose `receive` said http.disconnect."""


async def test_client_disconnects_are_not_breaker_failures(app: App) -> None:
    async def reads_body(scope: Scope) -> tuple[int, bytes]:
        raise ClientDisconnect

    app.behaviour["/upload"] = reads_body
    breaker = BreakerConfig(min_calls=2, window_s=10, open_s=60)
    guard = Guard(app, GuardConfig(token="", breaker=breaker))
    try:
        async with await serve(guard) as http:
            for _ in range(5):
                with pytest.raises(ClientDisconnect):
                    await http.post("/upload", content=b"x")
            assert guard.breakers["/upload"].state == 0
            assert guard.breakers["/upload"].window_counts(asyncio.get_running_loop().time()) == (
                0, 0, 0,
            )  # fmt: skip
            assert guard.route_stats["/upload"].by_method["POST"][4] == 5  # counted as 499
    finally:
        await guard.aclose()


async def test_an_error_raised_by_send_is_a_disconnect_but_the_apps_own_is_a_failure() -> None:
    """OSError raised inside the server's send: the connection is gone. The same error raised
    by the app's own I/O (its database refusing connections) is the route failing."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/db":
            raise ConnectionRefusedError("database down")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 10})

    async def broken_send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("peer went away")

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    breaker = BreakerConfig(min_calls=2, window_s=10, open_s=60)
    rules = (RouteRule("/page"), RouteRule("/db"))
    guard = Guard(app, GuardConfig(token="", breaker=breaker, routes=rules))
    scope: dict[str, object] = {
        "type": "http", "method": "GET", "path": "/page", "headers": [],
        "client": ("127.0.0.1", 1),
    }  # fmt: skip
    try:
        for _ in range(4):
            with pytest.raises(ConnectionResetError):
                await guard(scope, receive, broken_send)
        assert guard.breakers["/page"].state == 0
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await guard({**scope, "path": "/db"}, receive, broken_send)
        assert guard.breakers["/db"].state == 1
    finally:
        await guard.aclose()
