"""``crisisctl watch --listen HOST:PORT``: uvicorn serving an ASGI app in the watch's own loop.

`parse_listen` reads ``HOST:PORT`` (``[::1]:9095`` for IPv6; port 0 picks a free one);
`bind` opens the socket first, so a taken port is one sentence (uvicorn itself would exit the
process); `serve` runs uvicorn on that socket until `stop` is set. uvicorn's own signal
handling is off: the watch command owns SIGINT/SIGTERM and stops both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

__all__ = ["ListenError", "bind", "parse_listen", "serve"]


class ListenError(ValueError):
    """A listen address that cannot be used (one sentence)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); ListenError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ListenError(
            f"--listen {text!r} is not HOST:PORT: write e.g. 127.0.0.1:9095 or [::1]:9095."
        )
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ListenError when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc}).") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --listen."
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the watch command has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: Any, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve `app` on `sock` until `stop` is set (then finish the requests in flight)."""
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopper.cancel()
        await task
