"""The load engine's HTTP/1.1 client: one keep-alive connection per virtual user or worker.

`HttpConnection` is an `asyncio.Protocol` whose bytes go straight into an
`httptools.HttpResponseParser` (no StreamReader buffering): status, headers, Content-Length,
chunked and read-until-close bodies. Body bytes are counted; only the first `body_cap`
bytes are kept. `HttpClient` wraps one connection for a stream of identical requests: it
connects lazily, reconnects after ``Connection: close`` or an error, retries once when a
reused keep-alive connection turns out to have been closed by the server, bounds every
request by a timeout and turns every failure into a `RequestError` of one kind of
`ERROR_KINDS`. Redirects are not followed (a 3xx is just a status).

Loopback-only: targets come from `crisisctl.load.target.check_loopback_url`.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import httptools

from crisisctl.load.target import Target, check_loopback_url

__all__ = [
    "ERROR_KINDS",
    "HttpClient",
    "HttpConnection",
    "RequestError",
    "Response",
    "Target",
    "build_request",
    "classify_error",
    "parse_target",
]

#: Every error kind, in report order.
ERROR_KINDS: tuple[str, ...] = ("refused", "reset", "timeout", "bad_response", "other")
#: Body bytes kept per response by default (the rest is only counted).
BODY_CAP = 1024


def parse_target(url: str) -> Target:
    """Parse an ``http://`` URL; ValueError unless its host is loopback (127/8, ::1, localhost)."""
    return check_loopback_url(url, tool="crisisctl load")


def build_request(
    target: Target,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive; Content-Length set when there is a body)."""
    if not method.isalpha():
        raise ValueError(f"{method!r} is not an HTTP method.")
    merged: dict[str, tuple[str, str]] = {}
    defaults = (("Host", target.host_header), ("User-Agent", "crisisctl-load/1"), ("Accept", "*/*"))
    for name, value in (*defaults, *(headers or {}).items()):
        if any(c in name + value for c in "\r\n"):
            raise ValueError(f"header {name!r} contains a line break.")
        merged[name.lower()] = (name, value)
    if body is not None:
        merged["content-length"] = ("Content-Length", str(len(body)))
    head = f"{method.upper()} {target.path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in merged.values())
    return (head + "\r\n").encode("latin-1") + (body or b"")


class RequestError(Exception):
    """A request that ended without a complete response; `kind` is one of `ERROR_KINDS`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class BadResponse(Exception):
    """The server sent something that is not a valid HTTP/1.1 response."""


class ClosedEarly(ConnectionResetError):
    """The connection ended before a complete response; `got_bytes` if any response byte came."""

    def __init__(self, got_bytes: bool) -> None:
        super().__init__("connection closed before a complete response")
        self.got_bytes = got_bytes


_REFUSED_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ESHUTDOWN}


def classify_error(exc: BaseException) -> str:
    """Map an exception raised while connecting, sending or reading to an error kind."""
    if isinstance(exc, RequestError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "reset"
    if isinstance(exc, BadResponse | httptools.HttpParserError):
        return "bad_response"
    if isinstance(exc, OSError):
        if exc.errno in _REFUSED_ERRNOS:
            return "refused"
        if exc.errno in _RESET_ERRNOS:
            return "reset"
    return "other"


@dataclass(frozen=True, slots=True)
class Response:
    """One complete response: status, body size, the first bytes of the body, keep-alive."""

    status: int
    body_bytes: int
    body: bytes
    keep_alive: bool


class HttpConnection(asyncio.Protocol):
    """One HTTP/1.1 connection; `request` sends a request and waits for its whole response."""

    def __init__(self, body_cap: int = BODY_CAP) -> None:
        self.body_cap = body_cap
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self.head_only = False
        self._parser: Any = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._status = 0
        self._headers_done = False
        self._keep_alive = True
        self._got_bytes = False
        self._body_bytes = 0
        self._body: list[bytes] = []
        self._kept = 0

    @classmethod
    async def open(cls, host: str, port: int, body_cap: int = BODY_CAP) -> HttpConnection:
        """Connect to `host`:`port` (raises OSError subclasses on failure)."""
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(lambda: cls(body_cap), host, port)
        return conn

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have the same interface
        self.transport = cast(asyncio.Transport, transport)
        # asyncio and uvloop already set TCP_NODELAY on TCP transports

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._keep_alive and exc is None:
            self._finish()  # a body delimited by the end of the connection
        elif exc is not None and not isinstance(exc, ConnectionResetError | BrokenPipeError):
            waiter.set_exception(exc)
        else:
            waiter.set_exception(ClosedEarly(self._got_bytes))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = int(self._parser.get_status_code())
        self._keep_alive = bool(self._parser.should_keep_alive())
        if self.head_only or self._status in (204, 304) or 100 <= self._status < 200:
            if 100 <= self._status < 200:
                return  # an interim response: the real one follows
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._kept < self.body_cap:
            piece = body[: self.body_cap - self._kept]
            self._body.append(piece)
            self._kept += len(piece)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            self._reset_message()
            self._got_bytes = True
            return
        self._finish()

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._status < 100:
                waiter.set_exception(BadResponse(f"status {self._status}"))
                return
            waiter.set_result(
                Response(self._status, self._body_bytes, b"".join(self._body), self._keep_alive)
            )

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    # -- use -------------------------------------------------------------------------------
    async def request(self, data: bytes, head_only: bool = False) -> Response:
        """Send `data` (a whole request) and return its response; the caller bounds the time."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ClosedEarly(False)
        self._reset_message()
        if head_only != self.head_only or self.used:
            # a fresh parser per message: a HEAD response has no body the parser could expect
            self._parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.used = True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            response = await self._waiter
        finally:
            self._waiter = None
        if not response.keep_alive:
            self.close()
        return response

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Sends one prepared request over and over on one (re)connected keep-alive connection."""

    def __init__(
        self,
        target: Target,
        request: bytes,
        *,
        timeout_s: float,
        head_only: bool = False,
        body_cap: int = BODY_CAP,
    ) -> None:
        self.target = target
        self.request_bytes = request
        self.timeout_s = timeout_s
        self.head_only = head_only
        self.body_cap = body_cap
        self.conn: HttpConnection | None = None
        #: connections opened so far (keep-alive reuse shows as few connects for many requests)
        self.connects = 0

    async def _connect(self) -> HttpConnection:
        self.connects += 1
        self.conn = await HttpConnection.open(
            self.target.connect_host, self.target.port, self.body_cap
        )
        return self.conn

    async def _exchange(self, request: bytes, head_only: bool) -> Response:
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._connect()
        reused = conn.used
        try:
            return await conn.request(request, head_only)
        except (ClosedEarly, ConnectionResetError, BrokenPipeError) as exc:
            if not reused or (isinstance(exc, ClosedEarly) and exc.got_bytes):
                raise
        # a reused keep-alive connection the server had already closed: once more, fresh
        conn.close()
        conn = await self._connect()
        return await conn.request(request, head_only)

    async def send(
        self,
        timeout_s: float | None = None,
        request: bytes | None = None,
        head_only: bool | None = None,
    ) -> Response:
        """One request and its whole response within the timeout; RequestError otherwise.

        `request` (bytes from `build_request`) replaces the client's prepared request for this
        call only; `head_only` says whether it was a HEAD request (no body to read).
        Cancellation closes the connection and propagates (the caller counts it).
        """
        if request is None:
            request = self.request_bytes
            head_only = self.head_only
        elif head_only is None:
            head_only = request.startswith(b"HEAD ")
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                response = await self._exchange(request, head_only)
        except asyncio.CancelledError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise RequestError(classify_error(exc), str(exc)) from exc
        if not response.keep_alive:
            self.close()
        return response

    def close(self) -> None:
        """Close the current connection, if any."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
