"""The engine's lanes (callback-driven connections) handle every awkward case a task did.

A scripted HTTP/1.1 server on 127.0.0.1 in the test's own event loop answers by path, so each
case is deterministic enough to assert on: a keep-alive connection the server drops right
after answering (the lane retries on a fresh one, no error counted), a second unsolicited
response (never taken for the next request's), HEAD and GET mixed on one connection, requests
that hang (timeouts, and the run still ends on time), a bug in a lane's callback (raised from
the run, not swallowed), and the open model's slots on busy connections. Every run's latency
histogram holds exactly one sample per response (seconds are merged into it as they close).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping

import pytest

from crisisctl.load.client import build_request, parse_target
from crisisctl.load.engine import (
    LoadResult,
    Operation,
    RateSchedule,
    ThinkTime,
    run_closed_ops,
    run_open_ops,
)
from crisisctl.load.templates import BoundRequest, FixedRequest


def fixed(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Scripted:
    """Answers by path; counts accepted connections and requests."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                method, path = head.split(b" ", 2)[:2]
                if path == b"/drop":  # answers, then closes without saying so
                    writer.write(fixed(b"bye"))
                    await writer.drain()
                    break
                if path == b"/twice":
                    writer.write(fixed(b"one") + fixed(b"two"))
                elif path == b"/head":
                    body = b"" if method == b"HEAD" else b"hello"
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
                elif path == b"/close":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof")
                    await writer.drain()
                    break
                elif path.startswith(b"/sleep/"):
                    await asyncio.sleep(int(path[7:]) / 1000)
                    writer.write(fixed(b"late"))
                elif path == b"/hang":
                    await asyncio.sleep(3600)
                else:
                    writer.write(fixed(b"hello"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    srv = Scripted()
    await srv.start()
    yield srv
    await srv.stop()


def op(url: str, method: str = "GET", name: str | None = None, weight: float = 1.0) -> Operation:
    target = parse_target(url)
    raw = build_request(target, method)
    return Operation(
        name or f"{method} {target.path}",
        FixedRequest(raw),
        weight=weight,
        method=method,
        path=target.path,
    )


async def closed(
    url: str,
    users: int = 4,
    duration_s: float = 0.6,
    think: ThinkTime | None = None,
    timeout_s: float = 2.0,
    ops: list[Operation] | None = None,
) -> LoadResult:
    return await run_closed_ops(
        parse_target(url),
        ops or [op(url)],
        users=RateSchedule.constant(users, duration_s),
        think=think,
        timeout_s=timeout_s,
        seed=7,
    )


def assert_one_sample_per_response(res: LoadResult) -> None:
    assert res.latency.count == res.completed
    for stats in res.operations.values():
        assert stats.latency.count == stats.completed


async def test_a_connection_dropped_after_each_answer_is_retried_not_counted(
    server: Scripted,
) -> None:
    res = await closed(server.url("/drop"), users=2)
    assert res.completed > 10
    assert res.error_total == 0
    assert res.status_counts == {200: res.completed}
    assert res.connects >= res.completed  # one connection per answer, plus the retries
    assert_one_sample_per_response(res)


async def test_bodies_until_eof_and_connection_close(server: Scripted) -> None:
    res = await closed(server.url("/close"), users=2)
    assert res.completed > 10 and res.error_total == 0
    assert res.connects == res.completed
    assert res.bytes_received == len(b"until-eof") * res.completed


async def test_an_unsolicited_second_response_is_never_counted(server: Scripted) -> None:
    res = await closed(server.url("/twice"), users=2)
    assert res.completed > 10
    assert res.error_total == 0
    # the extra response closes the connection: never more answers than requests
    assert res.completed <= server.requests
    assert res.connects > 1


async def test_head_and_get_mixed_on_one_connection(server: Scripted) -> None:
    url = server.url("/head")
    ops = [op(url, "HEAD", "head"), op(url, "GET", "get")]
    res = await closed(url, users=2, ops=ops)
    assert res.error_total == 0
    assert res.connects == 2
    head, get = res.operations["head"], res.operations["get"]
    assert head.completed > 5 and get.completed > 5
    assert get.bytes_received == 5 * get.completed
    assert head.bytes_received == 0
    assert_one_sample_per_response(res)


async def test_hanging_requests_time_out_and_the_run_ends_on_time(server: Scripted) -> None:
    started = time.monotonic()
    res = await closed(server.url("/hang"), users=3, duration_s=0.5, timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert res.completed == 0
    assert res.errors.get("timeout", 0) >= 3
    assert elapsed < 0.5 + 0.3 + 0.5


async def test_think_time_paces_the_users(server: Scripted) -> None:
    res = await closed(server.url("/"), users=2, duration_s=0.5, think=ThinkTime("constant", 0.05))
    # two users, one request per ~50 ms each, for 0.5 s: about 20
    assert 12 <= res.completed <= 24
    assert res.error_total == 0
    assert_one_sample_per_response(res)


async def test_refused_connections_are_counted_and_paced() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = await closed(f"http://127.0.0.1:{port}/", users=2, duration_s=0.3)
    assert res.completed == 0
    refused = res.errors.get("refused", 0)
    assert refused > 0
    assert refused <= 2 * (0.3 / 0.01) + 4  # a refused user waits 10 ms before trying again


class Exploding:
    """A request source whose rendering raises: a bug in the run, not a request error."""

    def bind(self, extra_headers: Mapping[str, str] | None = None) -> BoundRequest:
        return self

    @property
    def fixed(self) -> bytes | None:
        return None

    def render(self, rng: random.Random) -> bytes:
        raise RuntimeError("template bug")


async def test_a_bug_in_a_lane_is_raised_from_the_run(server: Scripted) -> None:
    ops = [Operation("boom", Exploding())]
    with pytest.raises(RuntimeError, match="template bug"):
        await closed(server.url("/"), ops=ops)


async def test_open_model_slots_on_busy_connections(server: Scripted) -> None:
    url = server.url("/sleep/40")
    res = await run_open_ops(
        parse_target(url),
        [op(url)],
        schedule=RateSchedule.constant(100, 1.0),
        connections=2,
        timeout_s=2.0,
    )
    # two connections at ~40 ms each serve ~50 of the 100 slots per second: the rest start late
    assert res.error_total == 0
    assert res.completed >= 30
    assert res.late_starts > 10
    assert res.latency_uncorrected is not None
    corrected, raw = res.latency.summary(), res.latency_uncorrected.summary()
    assert corrected.p99_ms > 2 * raw.p99_ms
    assert_one_sample_per_response(res)


async def test_users_with_a_think_time_start_spread_out(server: Scripted) -> None:
    # 8 users, 200 ms constant think, a 50 ms run: the first pauses spread over [0, 200 ms],
    # so only the few drawn under 50 ms send (all 8 at t = 0 was the old, bursty start)
    res = await closed(server.url("/"), users=8, duration_s=0.05, think=ThinkTime("constant", 0.2))
    assert 1 <= res.requests <= 6
    assert res.error_total == 0


def test_first_pause_is_the_rest_of_a_pause() -> None:
    rng = random.Random(3)
    constant = ThinkTime("constant", 0.1)
    firsts = [constant.first(rng) for _ in range(2000)]
    assert all(0 <= f <= 0.1 for f in firsts)
    assert 0.045 < sum(firsts) / len(firsts) < 0.055  # uniform over [0, 0.1]
    expo = ThinkTime("exponential", 0.1)
    mean = sum(expo.first(rng) for _ in range(4000)) / 4000
    assert 0.09 < mean < 0.11  # memoryless: the rest of a pause is a whole pause
    assert ThinkTime().first(rng) == 0.0


async def test_a_bug_in_on_tick_is_raised_from_the_run(server: Scripted) -> None:
    def on_tick(tick: object) -> None:
        raise RuntimeError("live view bug")

    url = server.url("/")
    with pytest.raises(RuntimeError, match="live view bug"):
        await run_closed_ops(
            parse_target(url),
            [op(url)],
            users=RateSchedule.constant(2, 1.2),
            timeout_s=2.0,
            on_tick=on_tick,
        )
