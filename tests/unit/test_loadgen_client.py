"""The load client's fast path stays correct: parser reuse, lazy deadlines, odd responses.

A scripted HTTP/1.1 server runs on 127.0.0.1 in the test's own event loop (`asyncio.start_server`)
and answers each request line with exact bytes, so every case is deterministic: keep-alive
with Content-Length and chunked bodies on one reused parser, HEAD between GETs, interim 1xx
responses, 204/304, a second unsolicited response, a silently dropped keep-alive connection,
and timeouts that must fire at their own deadline — no earlier, and not at a stale one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from crisisctl.load.client import (
    HttpClient,
    RequestError,
    Response,
    build_request,
    parse_target,
)

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"


def fixed(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


class Scripted:
    """Answers by path; `connections` counts accepted sockets."""

    def __init__(self) -> None:
        self.connections = 0
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
                method, path = head.split(b" ", 2)[:2]
                if path.startswith(b"/size/"):
                    writer.write(fixed(b"x" * int(path[6:])))
                elif path == b"/chunked":
                    writer.write(CHUNKED)
                elif path == b"/head":
                    body = b"" if method == b"HEAD" else b"hello"
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
                elif path == b"/continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + fixed(b"after"))
                elif path == b"/nocontent":
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                elif path == b"/notmodified":
                    writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
                elif path == b"/twice":
                    writer.write(fixed(b"one") + fixed(b"two"))
                elif path == b"/drop":  # answers, then closes without saying so
                    writer.write(fixed(b"bye"))
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


def client(url: str, timeout_s: float = 2.0) -> HttpClient:
    target = parse_target(url)
    return HttpClient(target, build_request(target), timeout_s=timeout_s)


def request(url: str, method: str = "GET") -> bytes:
    return build_request(parse_target(url), method)


async def test_one_parser_serves_many_mixed_responses(server: Scripted) -> None:
    c = client(server.url("/"))
    sizes = [0, 1, 5, 1023, 1024, 1025, 4000, 70000, 3]
    for round_ in range(3):
        for size in sizes:
            r = await c.send(request=request(server.url(f"/size/{size}")))
            assert (r.status, r.body_bytes, r.keep_alive) == (200, size, True), (round_, size)
            assert r.body == b"x" * min(size, 1024)
        r = await c.send(request=request(server.url("/chunked")))
        assert (r.status, r.body, r.body_bytes) == (200, b"abcdefg", 7)
    assert c.connects == 1 and server.connections == 1
    c.close()


async def test_a_large_body_cap_keeps_a_body_that_came_in_many_reads(server: Scripted) -> None:
    target = parse_target(server.url("/size/300000"))
    c = HttpClient(target, build_request(target), timeout_s=2.0, body_cap=1 << 20)
    for _ in range(2):
        r = await c.send()
        assert r.body_bytes == len(r.body) == 300000 and r.body == b"x" * 300000
    r = await c.send(request=request(server.url("/chunked")))
    assert r.body == b"abcdefg"  # two chunks, joined
    c.close()


async def test_head_between_gets_on_one_connection(server: Scripted) -> None:
    c = client(server.url("/head"))
    head = request(server.url("/head"), "HEAD")
    for _ in range(3):
        got = await c.send(request=head)  # head_only guessed from the request line
        assert (got.status, got.body, got.body_bytes) == (200, b"", 0)
        got = await c.send()
        assert (got.status, got.body) == (200, b"hello")
    assert c.connects == 1
    c.close()


async def test_interim_and_bodiless_statuses(server: Scripted) -> None:
    c = client(server.url("/"))
    for path, status, body in [
        ("/continue", 200, b"after"),
        ("/nocontent", 204, b""),
        ("/notmodified", 304, b""),
        ("/", 200, b"hello"),
    ]:
        r = await c.send(request=request(server.url(path)))
        assert (r.status, r.body) == (status, body), path
    assert c.connects == 1
    c.close()


async def test_a_second_unsolicited_response_is_not_taken_for_the_next(server: Scripted) -> None:
    c = client(server.url("/twice"))
    first = await c.send()
    assert first.body == b"one"
    after = await c.send(request=request(server.url("/")))
    assert after.body == b"hello"  # never "two"
    assert c.connects == 2
    c.close()


async def test_a_silently_dropped_keep_alive_connection_is_retried(server: Scripted) -> None:
    c = client(server.url("/drop"))
    for _ in range(4):
        r = await c.send()
        assert (r.status, r.body) == (200, b"bye")
        await asyncio.sleep(0.02)  # let the server's close arrive (or not) before the next
    assert c.connects == 4
    c.close()


async def test_each_request_keeps_its_own_deadline(server: Scripted) -> None:
    # 0.1 s requests with a 0.3 s timeout: the timer armed for an earlier request must
    # re-arm for the later ones instead of failing them
    c = client(server.url("/sleep/100"), timeout_s=0.3)
    for _ in range(6):
        assert (await c.send()).body == b"late"
    started = time.monotonic()
    with pytest.raises(RequestError) as hung:
        await c.send(request=request(server.url("/hang")))
    assert hung.value.kind == "timeout"
    assert 0.29 <= time.monotonic() - started < 3.0
    assert (await c.send()).body == b"late"  # a fresh connection after the timeout
    c.close()


async def test_a_shorter_per_call_timeout_wins_over_an_armed_longer_one(
    server: Scripted,
) -> None:
    c = client(server.url("/"), timeout_s=30.0)
    assert (await c.send()).status == 200  # arms the connection's timer 30 s ahead
    started = time.monotonic()
    with pytest.raises(RequestError) as hung:
        await c.send(timeout_s=0.2, request=request(server.url("/hang")))
    assert hung.value.kind == "timeout"
    assert time.monotonic() - started < 3.0
    c.close()


async def test_cancellation_closes_the_connection(server: Scripted) -> None:
    c = client(server.url("/hang"), timeout_s=30.0)
    task = asyncio.create_task(c.send())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert c.conn is None
    c.close()


def test_response_is_an_immutable_record() -> None:
    r = Response(200, 5, b"hello", True)
    assert (r.status, r.body_bytes, r.body, r.keep_alive) == (200, 5, b"hello", True)
    with pytest.raises(AttributeError):
        r.status = 500  # type: ignore[misc]
