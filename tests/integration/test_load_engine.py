"""The load engine against a real raw HTTP/1.1 server on 127.0.0.1 (its own thread and loop).

The server is written with `asyncio.start_server` so each behaviour is exact: keep-alive,
chunked bodies, ``Connection: close``, bodies delimited by EOF, a never-answering route and a
route that freezes the whole server for ~1 s once every 3 s (the coordinated-omission test).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from crisisctl.load import ERROR_KINDS, ThinkTime, run_closed, run_open
from crisisctl.load.client import HttpClient, RequestError, build_request, parse_target

CHUNK = b"x" * 1000
CHUNKS = 5
STALL_PERIOD_S = 3.0
STALL_START_S = 1.0
STALL_S = 1.0


class RawServer:
    """A tiny HTTP/1.1 server in a background thread; `connections` counts accepted sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        self.stall_t0: float | None = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> RawServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _stall(self) -> None:
        now = time.monotonic()
        if self.stall_t0 is None:
            self.stall_t0 = now
        phase = (now - self.stall_t0) % STALL_PERIOD_S
        if STALL_START_S <= phase < STALL_START_S + STALL_S:
            await asyncio.sleep(STALL_START_S + STALL_S - phase)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                if path == "/hang":
                    await asyncio.sleep(3600)
                if path == "/stall":
                    await self._stall()
                if path == "/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for _ in range(CHUNKS):
                        writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                elif path == "/close":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"
                    )
                    await writer.drain()
                    break
                elif path == "/eof":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + CHUNK)
                    await writer.drain()
                    break
                elif path == "/bad":
                    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                    await writer.drain()
                    break
                elif path == "/missing":
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    srv = RawServer().start()
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def client_for(url: str, timeout_s: float = 2.0) -> HttpClient:
    target = parse_target(url)
    return HttpClient(target, build_request(target), timeout_s=timeout_s)


# -- the client --------------------------------------------------------------------------------
async def test_client_keep_alive_reuses_one_connection(server: RawServer) -> None:
    client = client_for(f"{server.url}/fast")
    for _ in range(50):
        response = await client.send()
        assert response.status == 200 and response.body == b"hello"
    assert client.connects == 1
    client.close()


async def test_client_reads_chunked_bodies(server: RawServer) -> None:
    client = client_for(f"{server.url}/chunked")
    for _ in range(3):
        response = await client.send()
        assert response.status == 200
        assert response.body_bytes == CHUNKS * len(CHUNK)
        assert len(response.body) == 1024  # only a small prefix is kept
    assert client.connects == 1
    client.close()


async def test_client_honours_connection_close_and_eof_bodies(server: RawServer) -> None:
    client = client_for(f"{server.url}/close")
    for _ in range(5):
        response = await client.send()
        assert (response.status, response.body, response.keep_alive) == (200, b"bye", False)
    assert client.connects == 5
    eof = client_for(f"{server.url}/eof")
    response = await eof.send()
    assert response.body_bytes == len(CHUNK)
    eof.close()


async def test_client_classifies_errors(server: RawServer) -> None:
    with pytest.raises(RequestError) as refused:
        await client_for(f"http://127.0.0.1:{free_port()}/").send()
    assert refused.value.kind == "refused"
    with pytest.raises(RequestError) as timeout:
        await client_for(f"{server.url}/hang", timeout_s=0.3).send()
    assert timeout.value.kind == "timeout"
    with pytest.raises(RequestError) as bad:
        await client_for(f"{server.url}/bad").send()
    assert bad.value.kind == "bad_response"


# -- open model ------------------------------------------------------------------------------
async def test_open_model_keep_alive_and_status_counts(server: RawServer) -> None:
    before = server.connections
    result = await run_open(f"{server.url}/fast", rate=300, duration_s=1.0, connections=4)
    assert result.requests == result.completed == 300
    assert result.status_counts == {200: 300}
    assert result.connects <= 4 and server.connections - before <= 4
    assert result.bytes_received == 300 * 5
    assert result.dropped == 0
    assert result.latency.count == 300
    assert result.latency_uncorrected is not None and result.latency_uncorrected.count == 300


async def test_open_model_hits_the_rate(server: RawServer) -> None:
    result = await run_open(f"{server.url}/fast", rate=200, duration_s=2.0, connections=8)
    print(f"open model: {result.requests} requests in 2 s, elapsed {result.elapsed_s:.3f} s")
    assert abs(result.requests - 400) <= 40
    assert abs(result.requests_per_second - 200) <= 20
    assert result.error_total == 0
    assert sum(s["requests"] for s in result.per_second) == result.requests
    assert result.elapsed_s < 2.5


async def test_open_model_chunked_and_close(server: RawServer) -> None:
    chunked = await run_open(f"{server.url}/chunked", rate=100, duration_s=0.5, connections=2)
    assert chunked.completed == 50 and chunked.bytes_received == 50 * CHUNKS * len(CHUNK)
    closing = await run_open(f"{server.url}/close", rate=100, duration_s=0.5, connections=2)
    assert closing.completed == 50 and closing.error_total == 0
    assert closing.connects == 50


async def test_open_model_refused_and_timeouts(server: RawServer) -> None:
    refused = await run_open(
        f"http://127.0.0.1:{free_port()}/", rate=50, duration_s=0.4, connections=2
    )
    assert refused.requests == 20 and refused.errors["refused"] == 20 and refused.unreachable
    started = time.monotonic()
    hung = await run_open(
        f"{server.url}/hang", rate=20, duration_s=0.5, connections=4, timeout_s=0.4
    )
    assert time.monotonic() - started < 0.5 + 0.4 + 0.5  # bounded: duration + timeout
    assert hung.completed == 0
    assert hung.errors["timeout"] == hung.requests > 0
    assert hung.requests + hung.dropped == 10
    assert set(hung.errors) == set(ERROR_KINDS)


async def test_open_model_stages_ramp(server: RawServer) -> None:
    result = await run_open(
        f"{server.url}/fast", rate=0, stages=[(1.0, 200), (1.0, 200)], connections=4
    )
    # 0 -> 200 over 1 s is 100 requests, then 1 s at 200 is 200 more
    assert abs(result.requests - 300) <= 2
    assert result.duration_s == 2.0
    first, second = result.per_second[0]["requests"], result.per_second[1]["requests"]
    assert abs(first - 100) <= 3 and abs(second - 200) <= 3


async def test_coordinated_omission_shows_in_corrected_p99(server: RawServer) -> None:
    server.stall_t0 = None
    result = await run_open(
        f"{server.url}/stall", rate=200, duration_s=3.0, connections=2, timeout_s=5.0
    )
    assert result.latency_uncorrected is not None
    corrected = result.latency.summary()
    uncorrected = result.latency_uncorrected.summary()
    print(
        f"stall test: corrected p99 {corrected.p99_ms} ms, uncorrected p99 {uncorrected.p99_ms} ms"
    )
    assert result.error_total == 0 and result.completed == result.requests
    assert corrected.p99_ms > 500
    assert uncorrected.p99_ms < corrected.p99_ms / 5
    assert uncorrected.max_ms > 500  # the stall itself is seen once per connection
    assert result.late_starts > 50


# -- closed model ----------------------------------------------------------------------------
async def test_closed_model_users_with_think_time(server: RawServer) -> None:
    before = server.connections
    result = await run_closed(
        f"{server.url}/fast",
        users=5,
        duration_s=1.0,
        think=ThinkTime("constant", 0.05),
        ramp_up_s=0.2,
    )
    # each user: ~1 request per 50 ms, less its ramp-up delay
    assert 60 <= result.requests <= 110
    assert result.completed == result.requests and result.error_total == 0
    assert result.connects == 5 and server.connections - before == 5
    assert result.latency_uncorrected is None
    assert result.to_dict()["latency_uncorrected_ms"] is None


async def test_closed_model_exponential_think_and_timeouts(server: RawServer) -> None:
    result = await run_closed(
        f"{server.url}/fast", users=3, duration_s=0.5, think=ThinkTime("exponential", 0.02), seed=1
    )
    assert result.completed > 20
    started = time.monotonic()
    hung = await run_closed(f"{server.url}/hang", users=2, duration_s=0.3, timeout_s=0.3)
    assert time.monotonic() - started < 1.2
    assert hung.errors["timeout"] == hung.requests >= 2
