"""A journey user's HTTP/1.1 client: one keep-alive connection, whole responses, a cookie jar.

The engine's lanes keep neither headers nor whole bodies; a journey needs both (extraction,
``Set-Cookie``). `JourneyClient.request` sends one request on the user's connection (opened,
or re-opened once when the server had closed a kept-alive one) and returns a `Reply`: status,
headers (names lower-cased; repeated ones joined with ``, ``) and the whole body. Cookies:
each ``Set-Cookie`` sets (or, with ``Max-Age=0``, removes) a cookie the client sends back on
its later requests — one host per run, so domain and path attributes are not applied.
Errors are raised as `RequestError` with the engine's kinds (refused, reset, timeout,
bad_response, tls, other).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httptools

from crisisctl.transport.client import RequestError, classify_error
from crisisctl.transport.target import Target

__all__ = ["JourneyClient", "Reply"]

_USER_AGENT = "crisisctl-load/1"


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response."""

    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; `waiter` gets the next complete response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self.got_bytes = False
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RequestError("bad_response", str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        kind = "reset" if self.got_bytes or exc is not None else "closed"
        self._fail(RequestError(kind, "the server closed the connection"))

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key == "set-cookie":
            text = self.headers[key] + "\n" + text if key in self.headers else text
        elif key in self.headers:
            text = self.headers[key] + ", " + text
        self.headers[key] = text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.head_only or self.status in (204, 304):
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            self._reset()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            keep = bool(self.parser.should_keep_alive())
            waiter.set_result(Reply(self.status, self.headers, b"".join(self.body), keep))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def send(self, data: bytes, head_only: bool) -> asyncio.Future[Reply]:
        self._reset()
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class JourneyClient:
    """A virtual user's connection and cookies (see the module's docstring)."""

    def __init__(self, target: Target, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.cookies: dict[str, str] = {}
        self.conn: _Connection | None = None
        self.connects = 0

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self.connects += 1
        try:
            target = self.target
            _, conn = await loop.create_connection(
                _Connection,
                target.connect_host,
                target.port,
                ssl=target.ssl,
                server_hostname=(target.server_hostname or target.host) if target.ssl else None,
            )
        except OSError as exc:
            raise RequestError(classify_error(exc), str(exc)) from None
        return conn

    def _bytes(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.target.host_header}"]
        given = {k.lower() for k in headers}
        if "user-agent" not in given:
            lines.append(f"User-Agent: {_USER_AGENT}")
        if "accept" not in given:
            lines.append("Accept: */*")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        return head + body if body is not None else head

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> Reply:
        """Send one request and return its whole response; RequestError on failure."""
        data = self._bytes(method, target, headers, body)
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self._exchange(data, method == "HEAD")
        except TimeoutError:
            self.close()
            raise RequestError("timeout", "no complete response within the timeout") from None
        if not reply.keep_alive:
            self.close()
        self._keep_cookies(reply.headers.get("set-cookie"))
        return reply

    async def _exchange(self, data: bytes, head_only: bool) -> Reply:
        fresh = False
        if self.conn is None or self.conn.closed:
            self.conn, fresh = await self._open(), True
        try:
            return await self.conn.send(data, head_only)
        except RequestError as exc:
            if fresh or exc.kind != "closed":
                raise RequestError("reset" if exc.kind == "closed" else exc.kind) from None
        self.conn = await self._open()  # the server had closed the kept-alive connection
        try:
            return await self.conn.send(data, head_only)
        except RequestError as exc:
            raise RequestError("reset" if exc.kind == "closed" else exc.kind) from None

    def _keep_cookies(self, header: str | None) -> None:
        if not header:
            return
        for line in header.split("\n"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(line)
            except CookieError:
                continue
            for name, morsel in jar.items():
                if morsel["max-age"] in ("0", "-1"):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def clear_cookies(self) -> None:
        """Forget every cookie (a new journey pass)."""
        self.cookies.clear()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
