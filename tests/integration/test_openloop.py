"""The open-loop generator against a real uvicorn server on 127.0.0.1 (background thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from crisisctl.lab.openloop import ERROR_KINDS, OpenLoopResult, check_loopback_url, run_open_loop
from crisisctl.stats import LatencyHistogram

CHUNKS = 5
CHUNK = b"x" * 1000


async def fast(request: Request) -> Response:
    return PlainTextResponse("hello")


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.05)
    return PlainTextResponse("slow")


async def chunked(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(CHUNKS):
            yield CHUNK
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="application/octet-stream")


async def fail(request: Request) -> Response:
    return PlainTextResponse("boom", status_code=500)


async def close(request: Request) -> Response:
    return PlainTextResponse("bye", headers={"Connection": "close"})


async def hang(request: Request) -> Response:
    await asyncio.sleep(3.0)
    return PlainTextResponse("late")


async def echo(request: Request) -> Response:
    data = await request.body()
    return PlainTextResponse(str(len(data)), status_code=200 if len(data) == 3000 else 400)


app = Starlette(
    routes=[
        Route("/fast", fast),
        Route("/slow", slow),
        Route("/chunked", chunked),
        Route("/fail", fail),
        Route("/close", close),
        Route("/hang", hang),
        Route("/echo", echo, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


def assert_counts_add_up(res: OpenLoopResult) -> None:
    assert res.intended == res.sent + res.unsent
    assert res.sent == res.completed + res.error_total
    assert res.completed == sum(res.status_counts.values())
    assert res.latency.count == res.completed
    assert res.latency_uncorrected.count == res.completed
    assert sum(h.count for h in res.latency_by_class.values()) == res.completed
    assert set(ERROR_KINDS) <= set(res.errors)
    assert sum(s["sent"] for s in res.per_second) == res.sent
    assert sum(s["completed"] for s in res.per_second) == res.completed


async def test_fast_route_rate_and_counts(base_url: str) -> None:
    res = await run_open_loop(f"{base_url}/fast", rate=200, duration_s=2.0, connections=16)
    assert_counts_add_up(res)
    assert res.intended == 400
    assert res.sent == 400 and res.completed == 400
    assert res.status_counts == {200: 400}
    assert res.error_total == 0
    # the schedule is kept: 200/s in each full second (±10 %), the whole run in ~2 s
    per_second = [s["sent"] for s in res.per_second[:2]]
    assert all(180 <= n <= 220 for n in per_second), per_second
    assert 1.9 <= res.elapsed_s <= 3.0
    assert 180 <= res.achieved_rate <= 220
    assert res.latency.percentile(99) >= res.latency_uncorrected.percentile(99)
    assert set(res.latency_by_class) == {"2xx"}
    doc = json.loads(json.dumps(res.as_dict(histograms=True)))
    assert doc["status_counts"] == {"200": 400}
    assert LatencyHistogram.from_dict(doc["histograms"]["latency"]).count == 400
    assert len(doc["per_second"]) <= 4
    assert doc["latency"]["count"] == 400


async def test_backlog_is_corrected(base_url: str) -> None:
    # 4 connections × 50 ms = 80 req/s of capacity, offered 120/s: requests queue for a
    # free connection, which only the corrected latency sees.
    res = await run_open_loop(f"{base_url}/slow", rate=120, duration_s=1.5, connections=4)
    assert_counts_add_up(res)
    assert res.error_total == 0
    assert res.completed > 0
    corrected, uncorrected = res.latency.percentile(99), res.latency_uncorrected.percentile(99)
    assert uncorrected >= 50_000
    assert corrected >= uncorrected
    assert corrected > 2 * uncorrected
    assert res.late_starts > 0


async def test_chunked_bodies_and_statuses(base_url: str) -> None:
    # few connections so every connection is reused many times: a mis-parsed chunked body
    # would break the next response on the same connection
    statuses: list[int] = []
    res = await run_open_loop(
        f"{base_url}/chunked",
        rate=100,
        duration_s=1.0,
        connections=2,
        on_response=lambda status, latency: statuses.append(status),
    )
    assert_counts_add_up(res)
    assert res.status_counts == {200: 100}
    assert res.error_total == 0
    assert statuses == [200] * 100

    res = await run_open_loop(f"{base_url}/fail", rate=100, duration_s=0.5, connections=2)
    assert_counts_add_up(res)
    assert res.status_counts == {500: 50}
    assert set(res.latency_by_class) == {"5xx"}
    assert res.ok == 0


async def test_connection_close_reconnects(base_url: str) -> None:
    res = await run_open_loop(f"{base_url}/close", rate=100, duration_s=0.5, connections=2)
    assert_counts_add_up(res)
    assert res.status_counts == {200: 50}


async def test_post_body_head_and_max_requests(base_url: str) -> None:
    res = await run_open_loop(
        f"{base_url}/echo",
        rate=100,
        duration_s=1.0,
        connections=2,
        method="POST",
        body=b"y" * 3000,
        headers={"Content-Type": "application/octet-stream"},
        max_requests=20,
    )
    assert_counts_add_up(res)
    assert res.intended == 20
    assert res.status_counts == {200: 20}

    res = await run_open_loop(f"{base_url}/fast", rate=100, duration_s=0.3, method="HEAD")
    assert_counts_add_up(res)
    assert res.status_counts == {200: 30}


async def test_timeouts_are_bounded(base_url: str) -> None:
    started = time.monotonic()
    res = await run_open_loop(f"{base_url}/hang", rate=20, duration_s=0.5, timeout_s=0.4)
    assert time.monotonic() - started < 2.0
    assert_counts_add_up(res)
    assert res.errors["timeout"] == res.sent == 10
    assert res.completed == 0


async def test_refused_connections_are_counted() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    started = time.monotonic()
    res = await run_open_loop(
        f"http://127.0.0.1:{port}/", rate=50, duration_s=0.5, connections=4, timeout_s=1.0
    )
    assert time.monotonic() - started < 3.0
    assert_counts_add_up(res)
    assert res.errors["refused"] == res.sent == 25
    assert res.completed == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://192.168.1.1:8080/x",
        "http://example.com/",
        "http://[2001:db8::1]/",
        "https://127.0.0.1/",
    ],
)
async def test_non_loopback_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="only"):
        await run_open_loop(url, rate=1, duration_s=0.1)


def test_loopback_spellings_are_accepted() -> None:
    assert check_loopback_url("http://localhost:1/").connect_host == "127.0.0.1"
    assert check_loopback_url("http://127.3.4.5:1/a?b=c").path == "/a?b=c"
    assert check_loopback_url("http://[::1]:1/").connect_host == "::1"
