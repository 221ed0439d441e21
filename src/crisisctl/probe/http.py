"""One timed HTTP/1.1 request on a fresh connection, with its time split into phases.

`probe()` resolves the address, connects, sends one request (``Connection: close``) and reads
the whole response with httptools, recording when each phase ended:

* ``dns_ms``       — resolving the host (`loop.getaddrinfo`, never blocking; ~0 for an address
  literal or a ``--resolve`` pin);
* ``connect_ms``   — the TCP handshake;
* ``tls_ms``       — the TLS handshake of an https:// target (None for http://);
* ``first_byte_ms``— from the start until the first response byte (curl's time_starttransfer);
* ``total_ms``     — from the start until the response was complete.

Every failure becomes an error kind (`ERROR_KINDS`): refused, reset (closed mid-response),
timeout (with the phase it was stuck in), bad_response (not HTTP), dns, tls (a failed
handshake or certificate check: the detail is `describe_tls_error`'s sentence), other. Nothing here
raises for anything the server does; the whole request is bounded by `timeout_s`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

import httptools

from crisisctl.transport.client import classify_error
from crisisctl.transport.request import build_request
from crisisctl.transport.resolve import resolve
from crisisctl.transport.target import Target
from crisisctl.transport.tls import describe_tls_error

#: Every error kind a probe can report, in report order.
ERROR_KINDS: Final = ("refused", "reset", "timeout", "bad_response", "dns", "tls", "other")
#: Body bytes kept per response (the rest is only counted).
BODY_CAP: Final = 256 * 1024
USER_AGENT: Final = "crisisctl-triage/1"
_READ_SIZE: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one request: a status or an error kind, and its phase timings in ms."""

    operation: str
    status: int | None = None
    error: str | None = None
    detail: str = ""
    dns_ms: float | None = None
    connect_ms: float | None = None
    tls_ms: float | None = None
    first_byte_ms: float | None = None
    total_ms: float | None = None
    body_bytes: int = 0
    body: bytes = b""
    content_type: str = ""

    @property
    def answered(self) -> bool:
        """Whether a complete HTTP response came back (any status)."""
        return self.status is not None

    @property
    def failed(self) -> bool:
        """An error for the error rate: no complete response, or a 5xx status."""
        return self.status is None or self.status >= 500

    @property
    def status_class(self) -> str:
        """ "2xx".."5xx" for a response, "error" without one."""
        return f"{self.status // 100}xx" if self.status is not None else "error"

    def as_dict(self) -> dict[str, Any]:
        """JSON form (no body): status, error, detail and the phase timings in ms."""
        return {
            "operation": self.operation,
            "status": self.status,
            "error": self.error,
            "detail": self.detail or None,
            "dns_ms": self.dns_ms,
            "connect_ms": self.connect_ms,
            "tls_ms": self.tls_ms,
            "first_byte_ms": self.first_byte_ms,
            "total_ms": self.total_ms,
            "body_bytes": self.body_bytes,
        }


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self, body_cap: int) -> None:
        self.body_cap = body_cap
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.delimited = False  # Content-Length or chunked: EOF before the end is a reset
        self.content_type = ""
        self.body_bytes = 0
        self.body = bytearray()
        self._name = b""
        self.parser: Any = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-length" or (key == b"transfer-encoding" and b"chunked" in value):
            self.delimited = True
        elif key == b"content-type":
            self.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = int(self.parser.get_status_code())
        if 100 <= status < 200:
            return  # interim response; the real one follows
        self.status = status
        self.headers_done = True
        if status in (204, 304):
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.headers_done:
            return
        self.body_bytes += len(body)
        room = self.body_cap - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000.0, 3)


def with_path(target: Target, path: str) -> Target:
    """The same target with another request path (which must start with "/")."""
    return dataclasses.replace(target, path=path)


async def probe(
    target: Target,
    *,
    operation: str | None = None,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float,
    body_cap: int = BODY_CAP,
) -> ProbeResult:
    """Send one request to `target` on a new connection and time it; never raises.

    Raises ValueError only for a request that cannot be built (bad method or header).
    """
    merged = {"User-Agent": USER_AGENT, "Connection": "close", **(headers or {})}
    if body is not None:
        merged.setdefault("Content-Type", "application/json")
    request = build_request(target, method, body, merged)
    name = operation or f"{method.upper()} {target.path}"
    head_only = method.upper() == "HEAD"
    start = time.perf_counter()
    marks: dict[str, float] = {}
    response = _Response(body_cap)
    writer: asyncio.StreamWriter | None = None
    phase = "resolving the address"
    try:
        async with asyncio.timeout(timeout_s):
            address = await resolve(target.connect_host, target.port)
            marks["dns"] = time.perf_counter()
            phase = "connecting"
            reader, writer = await asyncio.open_connection(address, target.port)
            marks["connect"] = time.perf_counter()
            if target.ssl is not None:
                phase = "in the TLS handshake"
                await writer.start_tls(target.ssl, server_hostname=target.server_hostname)
                marks["tls"] = time.perf_counter()
            phase = "waiting for the first byte"
            writer.write(request)
            await writer.drain()
            while not response.complete:
                data = await reader.read(_READ_SIZE)
                if "first_byte" not in marks and data:
                    marks["first_byte"] = time.perf_counter()
                    phase = "reading the response"
                if not data:
                    if response.headers_done and not response.delimited:
                        response.complete = True  # a body delimited by the end of the connection
                        break
                    got = "after part of the response" if marks.get("first_byte") else ""
                    raise ConnectionResetError(f"connection closed {got}".strip())
                response.parser.feed_data(data)
                if head_only and response.headers_done:
                    response.complete = True
            marks["total"] = time.perf_counter()
    except TimeoutError:
        return _failure(name, "timeout", f"no complete response within {timeout_s:g} s "
                        f"(stuck {phase})", start, marks, response)  # fmt: skip
    except httptools.HttpParserUpgrade:
        return _failure(name, "bad_response", "unexpected protocol upgrade", start, marks, response)
    except httptools.HttpParserError as exc:
        detail = f"the answer is not valid HTTP/1.1 ({exc})"
        return _failure(name, "bad_response", detail, start, marks, response)
    except ssl.SSLError as exc:
        detail = describe_tls_error(exc, target.host)
        return _failure(name, "tls", detail, start, marks, response)
    except socket.gaierror as exc:
        return _failure(name, "dns", f"cannot resolve the host ({exc})", start, marks, response)
    except (OSError, EOFError) as exc:
        kind = classify_error(exc)
        detail = str(exc) or exc.__class__.__name__
        if kind == "refused":
            detail = "connection refused"
        return _failure(name, kind, detail, start, marks, response)
    finally:
        if writer is not None:
            writer.close()
    return ProbeResult(
        operation=name,
        status=response.status,
        dns_ms=_ms(start, marks.get("dns")),
        connect_ms=_ms(marks["dns"], marks.get("connect")),
        tls_ms=_ms(marks["connect"], marks.get("tls")),
        first_byte_ms=_ms(start, marks.get("first_byte")),
        total_ms=_ms(start, marks["total"]),
        body_bytes=response.body_bytes,
        body=bytes(response.body),
        content_type=response.content_type,
    )


def _failure(
    name: str,
    kind: str,
    detail: str,
    start: float,
    marks: dict[str, float],
    response: _Response,
) -> ProbeResult:
    dns = marks.get("dns")
    connect = marks.get("connect")
    return ProbeResult(
        operation=name,
        error=kind if kind in ERROR_KINDS else "other",
        detail=detail,
        dns_ms=_ms(start, dns),
        connect_ms=_ms(dns, connect) if dns is not None else None,
        tls_ms=_ms(connect, marks.get("tls")) if connect is not None else None,
        first_byte_ms=_ms(start, marks.get("first_byte")),
        total_ms=_ms(start, time.perf_counter()),
        body_bytes=response.body_bytes,
    )
