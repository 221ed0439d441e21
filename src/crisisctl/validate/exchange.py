"""Requests whose answers are read for more than a status: headers, the refusal's reason, timing.

The load engine's client keeps only status and body (it is built for speed); two checks need
more: concurrency control tells a rate limit from concurrency shedding by each refusal's
``Retry-After``, its ``RateLimit*`` headers and its reason, and by when it was sent and
answered; error handling reads ``Allow`` to find a route that accepts a body. They go through
httpx (correctness over speed: these are tens or hundreds of requests, not a load), to the
validated target only, never through a proxy from the environment.

Every request becomes an `Exchange`: times in seconds since the caller's origin, the status or
an error kind (the load client's kinds: timeout, refused, reset, bad_response, other), and what
the response said about why it refused. A reason is read from a ``X-Crisis-Reason`` header when
present, else from a JSON body's ``"reason"`` field (the guard's refusals carry one).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from crisisctl.transport.client import classify_error
from crisisctl.transport.target import Target

#: a header a guard may put on refusals to say why (read when present)
REASON_HEADER = "x-crisis-reason"
#: JSON bodies up to this size are parsed for their "reason"
REASON_BODY_CAP = 64 * 1024
#: header prefixes of rate-limit policies (RFC draft RateLimit fields and the X- forms)
RATE_HEADER_PREFIXES = ("ratelimit", "x-ratelimit", "x-rate-limit")
USER_AGENT = "crisisctl-validate/1"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request: when it left and when its answer ended (s), and what came back."""

    sent: float
    done: float
    status: int | None
    error: str | None = None
    #: why the service refused, from its reason header or JSON body (None: it did not say)
    reason: str | None = None
    #: the Retry-After header in seconds (None: absent or unreadable)
    retry_after_s: float | None = None
    #: whether the response carried RateLimit* / X-RateLimit* headers
    rate_headers: bool = False
    #: the methods of the Allow header (empty: no header)
    allow: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """A 429 or 503: the service turned the request away."""
        return self.status in (429, 503)

    @property
    def served(self) -> bool:
        """A 2xx or 3xx response."""
        return self.status is not None and 200 <= self.status < 400

    @property
    def ms(self) -> float:
        """How long the request took, in ms."""
        return (self.done - self.sent) * 1000.0


def base_url(target: Target) -> str:
    """``scheme://host:port`` of the address to connect to (IPv6 literals in brackets)."""
    host = f"[{target.connect_host}]" if ":" in target.connect_host else target.connect_host
    return f"{target.scheme}://{host}:{target.port}"


def new_client(target: Target, connections: int, timeout_s: float) -> httpx.AsyncClient:
    """An httpx client for `target` only: `connections` keep-alive connections, no env proxies,
    the target's TLS context, SNI name (the URL's host, also for a pinned address) and headers."""
    hooks: dict[str, list[Any]] = {}
    if target.server_hostname is not None:
        name = target.server_hostname

        async def sni(request: httpx.Request) -> None:
            request.extensions["sni_hostname"] = name

        hooks["request"] = [sni]
    return httpx.AsyncClient(
        base_url=base_url(target),
        headers={"Host": target.host_header, "User-Agent": USER_AGENT, **dict(target.headers)},
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
        follow_redirects=False,
        verify=target.ssl if target.ssl is not None else True,
        event_hooks=hooks,
    )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def refusal_reason(headers: httpx.Headers, body: bytes) -> str | None:
    """The reason header's value, else a JSON object body's ``"reason"`` string, else None."""
    header = headers.get(REASON_HEADER)
    if header:
        return header.strip() or None
    if "json" not in headers.get("content-type", "") or len(body) > REASON_BODY_CAP:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and reason else None


def allowed_methods(headers: httpx.Headers) -> tuple[str, ...]:
    """The methods named by an ``Allow`` header, upper-case, in order."""
    return tuple(m.strip().upper() for m in headers.get("allow", "").split(",") if m.strip())


def _error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    cause = exc.__cause__ or exc.__context__
    kind = classify_error(cause) if cause is not None else "other"
    if kind != "other":
        return kind
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "reset"
    return "other"


async def exchange(
    client: httpx.AsyncClient,
    origin: float,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Exchange:
    """Send one request with `client` and describe its answer; never raises for the server.

    `origin` is the `time.perf_counter()` the Exchange's times are measured from.
    """
    sent = time.perf_counter() - origin
    try:
        response = await client.request(method, path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Exchange(sent, time.perf_counter() - origin, None, error=_error_kind(exc))
    done = time.perf_counter() - origin
    names = {name.lower() for name in response.headers}
    return Exchange(
        sent,
        done,
        response.status_code,
        reason=refusal_reason(response.headers, response.content) if response.is_error else None,
        retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
        rate_headers=any(name.startswith(RATE_HEADER_PREFIXES) for name in names),
        allow=allowed_methods(response.headers),
    )
