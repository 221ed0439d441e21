"""One timed request (crisisctl.probe.http.probe) against canned loopback answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from crisisctl.load.target import Target, check_loopback_url
from crisisctl.probe.http import ProbeResult, probe


@contextlib.asynccontextmanager
async def _serve(
    answer: bytes | None, *, delay: float = 0.0, rst: bool = False
) -> AsyncIterator[Target]:
    """A server that reads the request head, waits `delay`, writes `answer` and closes.

    `answer` None never answers; `rst` ends the connection with a TCP reset.
    """
    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            if answer is None:
                await asyncio.Event().wait()
            writer.write(answer or b"")
            await writer.drain()
            if rst:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield check_loopback_url(f"http://127.0.0.1:{port}/probe", "test")
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _one(
    answer: bytes | None, timeout_s: float = 2.0, *, delay: float = 0.0, rst: bool = False
) -> ProbeResult:
    async with _serve(answer, delay=delay, rst=rst) as target:
        return await probe(target, timeout_s=timeout_s)


@pytest.mark.parametrize(
    ("answer", "status", "body_bytes"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, 5),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, 3),
        (b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nuntil the end", 503, 13),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, 0),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            201,
            2,
        ),
    ],
)
async def test_complete_responses(answer: bytes, status: int, body_bytes: int) -> None:
    result = await _one(answer)
    assert result.status == status and result.error is None
    assert result.body_bytes == body_bytes
    assert result.failed is (status >= 500)
    row = result.as_dict()
    assert row["tls_ms"] is None
    assert row["dns_ms"] >= 0 and row["connect_ms"] >= 0
    assert row["dns_ms"] <= row["first_byte_ms"] <= row["total_ms"]


async def test_first_byte_measures_the_server_wait() -> None:
    result = await _one(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", delay=0.2)
    assert result.first_byte_ms is not None and result.connect_ms is not None
    assert result.first_byte_ms >= 190
    assert result.connect_ms < result.first_byte_ms


@pytest.mark.parametrize(
    ("answer", "kwargs", "kind", "detail"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", {}, "reset", "closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", {"rst": True}, "reset", ""),
        (b"\x00\x01 not http at all\r\n\r\n", {}, "bad_response", "not valid HTTP"),
        (b"", {}, "reset", "closed"),
        (None, {}, "timeout", "stuck waiting for the first byte"),
    ],
)
async def test_failures_become_error_kinds(
    answer: bytes | None, kwargs: dict[str, Any], kind: str, detail: str
) -> None:
    result = await _one(answer, timeout_s=0.5, **kwargs)
    assert result.status is None and result.error == kind
    assert detail in result.detail
    assert result.failed


async def test_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe(check_loopback_url(f"http://127.0.0.1:{port}/", "test"), timeout_s=1.0)
    assert result.error == "refused" and result.detail == "connection refused"
    assert result.connect_ms is None


async def test_request_carries_method_body_and_close() -> None:
    captured: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        captured.append(await reader.readuntil(b"\r\n\r\n"))
        captured.append(await reader.readexactly(8))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        target = check_loopback_url(f"http://localhost:{port}/x?q=1", "test")
        result = await probe(target, method="POST", body=b'{"a": 1}', timeout_s=2.0)
    assert result.status == 200 and result.operation == "POST /x?q=1"
    head = captured[0].decode()
    assert head.startswith("POST /x?q=1 HTTP/1.1\r\n")
    for header in (
        "Connection: close",
        "Content-Length: 8",
        "Content-Type: application/json",
        "User-Agent: crisisctl-triage/1",
        f"Host: localhost:{port}",
    ):
        assert header in head
    assert captured[1] == b'{"a": 1}'
