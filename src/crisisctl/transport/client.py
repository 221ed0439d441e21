"""The fast HTTP/1.1 client: one keep-alive connection (plain or TLS) per virtual user or worker.

`HttpConnection` is an `asyncio.Protocol` whose bytes go straight into an
`httptools.HttpResponseParser` (no StreamReader buffering): status, headers, Content-Length,
chunked and read-until-close bodies. Body bytes are counted; only the first `body_cap`
bytes are kept. `HttpClient` wraps one connection for a stream of identical requests: it
connects lazily, reconnects after ``Connection: close`` or an error, retries once when a
reused keep-alive connection turns out to have been closed by the server, bounds every
request by a timeout and turns every failure into a `RequestError` of one kind of
`ERROR_KINDS`. Redirects are not followed (a 3xx is just a status).

The per-request path is kept short because the generator's CPU time per request is what
limits one core (benchmarks/loadgen_throughput.py measures it):

* a request on a live keep-alive connection is one `transport.write` and one awaited future,
  resolved from the parser's callbacks; besides the `send` coroutine itself no coroutine,
  task, timer handle or context manager is created per request;
* the timeout is a per-connection deadline watched by one lazily re-armed timer: a request
  stores its deadline, and the timer, when it fires, either fails the request still in
  flight or re-arms itself for the newer deadline (an ``asyncio.timeout`` per request, which
  creates and cancels a timer handle each time, was a large share of the old path's cost);
* the parser is reused across keep-alive responses (llhttp resets itself after each
  message); a fresh one is made only after an unfinished message or around HEAD requests,
  whose responses announce a body that never comes.

Any host, http:// and https://: a connection goes to the target's `connect_host` (a
``--resolve`` pin, or the name, resolved by the loop without blocking it) with the target's
TLS context and SNI name (`server_hostname`, the URL's host); a TLS connection is reused
across requests like a plain one. Targets come from `crisisctl.transport.target.parse_url`.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol, cast

import httptools

from crisisctl.transport.request import build_request
from crisisctl.transport.target import Target

__all__ = [
    "ERROR_KINDS",
    "HttpClient",
    "HttpConnection",
    "RequestError",
    "Response",
    "Target",
    "Waiter",
    "build_request",
    "classify_error",
]

#: Every error kind, in report order.
ERROR_KINDS: tuple[str, ...] = ("refused", "reset", "timeout", "bad_response", "tls", "other")
#: Body bytes kept per response by default (the rest is only counted).
BODY_CAP: Final = 1024
#: Event-loop timers tick in milliseconds: a deadline this close counts as reached.
_TIMER_SLACK_S: Final = 0.001


class RequestError(Exception):
    """A request that ended without a complete response; `kind` is one of `ERROR_KINDS`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class BadResponse(Exception):
    """The server sent something that is not a valid HTTP/1.1 response."""


class ClosedEarly(Exception):
    """The connection ended before a complete response; `got_bytes` if any response byte came.

    (A reset, as `classify_error` counts it; not a ConnectionResetError subclass because
    mypyc compiles only subclasses of Exception natively.)"""

    def __init__(self, got_bytes: bool) -> None:
        super().__init__("connection closed before a complete response")
        self.got_bytes = got_bytes


_REFUSED_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ESHUTDOWN}


def classify_error(exc: BaseException) -> str:
    """Map an exception raised while connecting, sending or reading to an error kind."""
    if isinstance(exc, RequestError):
        return exc.kind
    if isinstance(exc, ClosedEarly):
        return "reset"
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
    if isinstance(exc, ssl.SSLError):
        return "tls"  # a failed handshake or certificate check, or a TLS alert mid-stream
    if isinstance(exc, OSError):
        if exc.errno in _REFUSED_ERRNOS:
            return "refused"
        if exc.errno in _RESET_ERRNOS:
            return "reset"
    return "other"


class Response(NamedTuple):
    """One complete response: status, body size, the first bytes of the body, keep-alive.

    Immutable; a named tuple because it is made once per request and a tuple is the cheapest
    immutable record to make.
    """

    status: int
    body_bytes: int
    body: bytes
    keep_alive: bool


_new_response = tuple.__new__  # Response(...) without the Python-level __new__ frame


class Waiter(Protocol):
    """What a connection resolves with a request's outcome: an `asyncio.Future`, or an object
    of the engine's that reacts to the outcome in the same callback (no task wake-up)."""

    def done(self) -> bool: ...

    def set_result(self, result: Response, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class HttpConnection:
    """One HTTP/1.1 connection, an asyncio protocol: `begin` sends a request and returns the
    future of its response; `start` hands the response to a waiter of the caller's."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_deadline",
        "_feeding",
        "_finished",
        "_got_bytes",
        "_headers_done",
        "_loop",
        "_more",
        "_parser",
        "_resume",
        "_status",
        "_timer",
        "_timer_at",
        "_waiter",
        "body_cap",
        "closed",
        "connect_s",
        "head_only",
        "received_at",
        "tls_s",
        "transport",
        "used",
    )

    def __init__(self, body_cap: int = BODY_CAP) -> None:
        self.body_cap = body_cap
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: seconds the TCP connect took, and the TLS handshake after it (0.0: plain http)
        self.connect_s = 0.0
        self.tls_s = 0.0
        #: a request was sent on this connection (a failure on a reused one may be retried)
        self.used = False
        self.head_only = False
        self._loop = asyncio.get_running_loop()
        self._parser: Any = httptools.HttpResponseParser(self)
        self._waiter: Waiter | None = None
        #: bytes are being parsed right now (a waiter must not send the next request yet)
        self._feeding = False
        #: monotonic time the bytes being parsed arrived (a response completed by them came
        #: then: a waiter reads it from its `set_result` instead of the clock)
        self.received_at = 0.0
        #: called once the bytes being parsed are done: the waiter's next request
        self._resume: Callable[[], None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._status = 0
        self._headers_done = False
        self._got_bytes = False
        self._body_bytes = 0
        self._body = b""
        #: body pieces after the first (a body kept whole arrives in one piece as a rule)
        self._more: list[bytes] | None = None
        #: the current message was parsed to its end (the parser can take the next one)
        self._finished = True

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        body_cap: int = BODY_CAP,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> HttpConnection:
        """Connect to `host`:`port`, with TLS when `tls` is given (SNI and the certificate's
        name check use `server_hostname`); raises OSError subclasses (ssl.SSLError for a
        failed handshake) on failure."""
        loop = asyncio.get_running_loop()
        factory = cast("Callable[[], asyncio.BaseProtocol]", lambda: cls(body_cap))
        started = time.monotonic()
        plain, protocol = await loop.create_connection(factory, host, port)
        conn = cast(HttpConnection, protocol)
        connected = time.monotonic()
        conn.connect_s = connected - started
        if tls is not None:
            # the handshake apart from the connect, so that reports can split the two
            try:
                secure = await loop.start_tls(
                    plain, protocol, tls, server_hostname=server_hostname or host
                )
            except BaseException:
                plain.close()
                raise
            if secure is None:
                plain.close()
                raise ConnectionResetError("the connection closed during the TLS handshake")
            conn.transport = secure
            conn.tls_s = time.monotonic() - connected
        return conn

    @classmethod
    async def open_target(cls, target: Target, body_cap: int = BODY_CAP) -> HttpConnection:
        """`open` a connection to `target` (its pinned address, TLS context and SNI name)."""
        return await cls.open(
            target.connect_host, target.port, body_cap, target.ssl, target.server_hostname
        )

    # -- the asyncio protocol interface (a plain class: mypyc compiles it natively) ----------
    def pause_writing(self) -> None:
        """Requests are small and one is in flight at a time: nothing to pause."""

    def resume_writing(self) -> None:
        """See `pause_writing`."""

    def eof_received(self) -> bool | None:
        """The server shut its side: let the transport close (`connection_lost` follows)."""
        return None

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
        self.received_at = time.monotonic()
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(str(exc)))
        finally:
            self._feeding = False
        resume = self._resume
        if resume is not None:
            self._resume = None
            resume()

    @property
    def feeding(self) -> bool:
        """Bytes are being parsed right now (`received_at` is when they came)."""
        return self._feeding

    def after_feed(self, callback: Callable[[], None]) -> bool:
        """Run `callback` once the bytes being parsed are done; False when none are."""
        if not self._feeding or self.closed:
            return False
        self._resume = callback
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and exc is None and not self._parser.should_keep_alive():
            self._finish()  # a body delimited by the end of the connection
        elif exc is not None and not isinstance(exc, ConnectionResetError | BrokenPipeError):
            waiter.set_exception(exc)
        else:
            waiter.set_exception(ClosedEarly(self._got_bytes))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_headers_complete(self) -> None:
        if self._finished:
            # a second response to one request: the server is out of step, stop trusting it
            self.close()
            return
        self._headers_done = True
        status = self._status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim response: the real one follows
        if self.head_only or status == 204 or status == 304:
            self._finish()

    def on_body(self, body: bytes) -> None:
        size = len(body)
        kept = self._body_bytes
        self._body_bytes = kept + size
        cap = self.body_cap
        if kept < cap:
            piece = body if kept + size <= cap else body[: cap - kept]
            if not kept:
                self._body = piece  # the usual case: the whole body in one piece, no copy
            elif self._more is None:
                self._more = [piece]
            else:
                self._more.append(piece)

    def on_message_complete(self) -> None:
        status = self._status
        if status >= 200:  # the common case, inlined: the whole response is there
            self._finished = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                more = self._more
                body = self._body if more is None else b"".join([self._body, *more])
                waiter.set_result(
                    _new_response(
                        Response, (status, self._body_bytes, body, self._parser.should_keep_alive())
                    )
                )
            return
        if 100 <= status < 200 and status != 101:
            # the interim response is done; the parser goes on with the real one
            self._status = 0
            self._headers_done = False
            self._body_bytes = 0
            self._body = b""
            self._more = None
            return
        self._finished = True
        self._finish()

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._status < 100:
                waiter.set_exception(BadResponse(f"status {self._status}"))
                return
            more = self._more
            body = self._body if more is None else b"".join([self._body, *more])
            waiter.set_result(
                _new_response(
                    Response,
                    (self._status, self._body_bytes, body, self._parser.should_keep_alive()),
                )
            )

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    # -- the deadline ----------------------------------------------------------------------
    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or self.closed:
            return  # nothing in flight: the next request re-arms the timer
        deadline = self._deadline
        if self._loop.time() + _TIMER_SLACK_S >= deadline:
            self._fail(TimeoutError("no complete response within the timeout"))
        else:  # the request in flight started after the one the timer was armed for
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    # -- use -------------------------------------------------------------------------------
    def begin(
        self, data: bytes, head_only: bool = False, deadline: float | None = None
    ) -> asyncio.Future[Response]:
        """Send `data` (a whole request); the future gets its response or the error.

        With a `deadline` (in `loop.time()` seconds) the future fails with TimeoutError and the
        connection closes when no complete response came by then; without one the caller
        bounds the time. Raises `ClosedEarly` at once when the connection is already closed.
        """
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self.start(waiter, data, head_only, deadline)
        return waiter

    def start(
        self, waiter: Waiter, data: bytes, head_only: bool = False, deadline: float | None = None
    ) -> None:
        """`begin` for a waiter of the caller's (the engine's lanes): `waiter` gets the
        response or the error from the connection's own callbacks.

        A waiter must not send its next request on this connection from inside `set_result`
        (the parser is still busy with the bytes that completed the response): `after_feed`
        defers it to the moment they are done.
        """
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ClosedEarly(False)
        if head_only or self.head_only or not self._finished:
            # a fresh parser: a HEAD response announces a body that never comes, and an
            # unfinished message would be mistaken for the start of the next one
            self._parser = httptools.HttpResponseParser(self)
            self.head_only = head_only
        self._status = 0
        self._headers_done = False
        self._got_bytes = False
        self._body_bytes = 0
        self._body = b""
        self._more = None
        self._finished = False
        self.used = True
        self._waiter = waiter
        if deadline is not None:
            self._deadline = deadline
            timer = self._timer
            if timer is None or deadline < self._timer_at:
                # no timer yet, or one set for later than this (shorter) timeout allows
                if timer is not None:
                    timer.cancel()
                self._timer_at = deadline
                self._timer = self._loop.call_at(deadline, self._on_timer)
        transport.write(data)

    async def request(self, data: bytes, head_only: bool = False) -> Response:
        """Send `data` (a whole request) and return its response; the caller bounds the time."""
        response = await self.begin(data, head_only)
        if not response.keep_alive:
            self.close()
        return response

    def close(self) -> None:
        """Close the connection (idempotent); a request still in flight is abandoned: its
        waiter is never resolved (the caller that closes has given up on it)."""
        self.closed = True
        self._waiter = None  # (a deferred `after_feed` callback still runs: it may reconnect)
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


_RETRYABLE = (ClosedEarly, ConnectionResetError, BrokenPipeError)


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
        #: seconds spent in TCP connects and in TLS handshakes, over those connections
        self.connect_s = 0.0
        self.tls_s = 0.0

    def opened(self, conn: HttpConnection) -> None:
        """Count the set-up time of a connection just opened for this client."""
        self.connect_s += conn.connect_s
        self.tls_s += conn.tls_s

    async def _fresh(self, request: bytes, head_only: bool, deadline: float) -> Response:
        """Connect (by `deadline`, in `loop.time()` seconds), then send on the new connection."""
        self.close()
        self.connects += 1
        async with asyncio.timeout_at(deadline):
            conn = await HttpConnection.open_target(self.target, self.body_cap)
        self.opened(conn)
        self.conn = conn
        return await conn.begin(request, head_only, deadline)

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
        if timeout_s is None:
            timeout_s = self.timeout_s
        conn = self.conn
        try:
            if conn is None or conn.closed:
                deadline = asyncio.get_running_loop().time() + timeout_s
                response = await self._fresh(request, head_only, deadline)
            else:
                # the hot path: a live keep-alive connection that has served requests before
                deadline = conn._loop.time() + timeout_s
                try:
                    response = await conn.begin(request, head_only, deadline)
                except _RETRYABLE as exc:
                    if isinstance(exc, ClosedEarly) and exc.got_bytes:
                        raise
                    # the server had closed this kept-alive connection: once more, fresh
                    response = await self._fresh(request, head_only, deadline)
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
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()
