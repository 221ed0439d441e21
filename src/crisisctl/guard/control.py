"""The guard's control surface under its prefix (default ``/_crisis``).

    GET  <prefix>/health    200 {"status": "ok", "mode": …} — to anyone, even under overload
    GET  <prefix>/status    JSON: mode, limits, in-flight, shed counts, breakers, latency
    GET  <prefix>/metrics   Prometheus text exposition
    GET  <prefix>/mode      the current mode and its history
                            (these three: trusted networks or a read token, see access.py)
    POST <prefix>/mode      {"mode": "emergency", "reason": "…", "actor": "…"}
                            needs ``Authorization: Bearer <token>``; disabled without a token
    POST <prefix>/cache/invalidate  {"prefix": "/api/items"} or {"route": "/api/items/{id}"}:
                            drops the cached responses whose key starts with it (the route's
                            template up to its first parameter); the token, like POST mode

These paths are critical: never queued, shed or limited by the app's limits. Health answers
everyone; status, metrics and the mode history answer trusted networks or a read token, and
status and metrics have a small rate limit of their own (`guard/access.py`). Status and
metrics are kept current incrementally (`guard/digest.py`), mostly in the background while
they are read (`guard/refresher.py`: a read serves figures at most 2 × `control_refresh_s`
old), and read the guard only through its public state view (`guard/state.py`). Responses
are built here without any framework so the guard works around any ASGI app.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST

from crisisctl._pure import compiled
from crisisctl.guard.access import ControlAccess
from crisisctl.guard.access import bearer as _bearer
from crisisctl.guard.digest import Digest
from crisisctl.guard.limits_json import LimitsJSON
from crisisctl.guard.modes import MODES
from crisisctl.guard.refresher import Refresher
from crisisctl.guard.track import operation_metrics, operations
from crisisctl.guard.types import Receive, Scope, Send

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard
    from crisisctl.guard.state import GuardState

ENDPOINTS = ("health", "status", "metrics", "mode", "cache/invalidate")
MAX_BODY = 16 * 1024

REFUSAL_MESSAGES = {
    "emergency": "the service is in emergency mode and sheds this low-priority route; retry later",
    "memory": "the service is over its memory budget and sheds this low-priority route; "
    "retry later",
    "circuit_open": "this route is failing and its circuit breaker is open; retry later",
    "queue_full": "the service is at its concurrency limit and its queue is full; retry later",
    "queue_timeout": "the service is at its concurrency limit and the request waited too long",
    "overloaded": "the service is overloaded and sheds new requests at once; retry later",
}


class ControlSurface:
    """One guard's control surface: who may read it (`access`) and its documents (`digest`)."""

    def __init__(self, guard: Guard) -> None:
        config = guard.config
        read_token = config.read_token
        if read_token is None:
            read_token = os.environ.get("CRISISCTL_GUARD_READ_TOKEN", "")
        self.state: GuardState = guard.state
        self.access = ControlAccess(
            config,
            read_token=read_token.encode() if read_token else None,
            write_token=guard.token,
            clock=guard.clock,
        )
        self.digest = Digest(self.state, operation_metrics)
        #: the status document's "concurrency" member, re-encoded per route limiter as needed
        self.limits = LimitsJSON()
        #: when the documents are refreshed: in the background while they are read
        self.refresher = Refresher(self.digest, config.control_refresh_s, self.limits)


def is_control_path(path: str, prefix: str) -> bool:
    """Whether `path` is the control prefix or under it (``/_crisis``, ``/_crisis/status``;
    not ``/_crisisx``)."""
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    retry_after: float | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete JSON response."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    await send_body(
        send, status, body, b"application/json", retry_after=retry_after, headers=headers
    )


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    retry_after: float | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete response with `body`."""
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if retry_after is not None:
        raw.append((b"retry-after", str(max(1, math.ceil(retry_after - 1e-9))).encode()))
    if headers:
        raw.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_chunks(send: Send, status: int, chunks: list[bytes], content_type: bytes) -> None:
    """Send a complete response whose body is `chunks`, one message each."""
    size = sum(len(chunk) for chunk in chunks)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(size).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for i, chunk in enumerate(chunks):
        more = i < len(chunks) - 1
        await send({"type": "http.response.body", "body": chunk, "more_body": more})


async def handle(guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request to the control surface."""
    prefix = guard.config.prefix
    name = scope["path"][len(prefix) :].strip("/")
    method = scope["method"]
    if name not in ENDPOINTS:
        await send_json(
            send,
            404,
            {"error": f"unknown control endpoint {scope['path']!r}",
             "endpoints": [f"{prefix}/{e}" for e in ENDPOINTS]},
        )  # fmt: skip
        return
    allowed: tuple[str, ...] = ("GET", "HEAD", "POST") if name == "mode" else ("GET", "HEAD")
    if name == "cache/invalidate":
        allowed = ("POST",)
    if method not in allowed:
        await send_json(
            send,
            405,
            {"error": f"{method} is not allowed on {scope['path']}; use {' or '.join(allowed)}"},
            headers=[(b"allow", ", ".join(allowed).encode())],
        )
        return
    if name == "health":
        await send_json(send, 200, {"status": "ok", "mode": guard.mode})
        return
    surface: ControlSurface = guard.control_surface
    refusal = None
    if name != "mode" or method == "POST":
        # the costly reads (status, metrics) and every mode switch attempt pass the surface's
        # own rate limit: a token cannot be guessed at speed, a switch cannot be spammed
        refusal = surface.access.check_rate(scope)
    if refusal is None and method != "POST":  # (POST mode needs the write token)
        refusal = surface.access.check_read(scope)
    if refusal is not None:
        await send_json(
            send,
            refusal.status,
            refusal.payload,
            retry_after=refusal.retry_after,
            headers=refusal.headers,
        )
        return
    if name == "metrics":
        await surface.refresher.read("metrics")
        await send_chunks(send, 200, surface.digest.metrics_body(), CONTENT_TYPE_LATEST.encode())
    elif name == "status":
        await surface.refresher.read("status")
        head = status_head(surface.state, surface.digest, surface.limits)
        await send_chunks(send, 200, surface.digest.status_body(head), b"application/json")
    elif name == "cache/invalidate":
        await _invalidate(guard, scope, receive, send)
    elif method == "POST":
        await _switch_mode(guard, scope, receive, send)
    else:
        await send_json(send, 200, surface.state.modes.describe())


async def _read_body(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return body


async def _authorized(guard: Guard, scope: Scope, send: Send, what: str) -> bool:
    """Whether the request carries the write token; if not, the refusal is sent."""
    if guard.token is None:
        await send_json(
            send,
            403,
            {"error": f"{what} over HTTP is disabled: configure a token "
                      "(GuardConfig(token=…) or CRISISCTL_GUARD_TOKEN) to enable it"},
        )  # fmt: skip
        return False
    given = _bearer(scope)
    if given is None or not hmac.compare_digest(given, guard.token):
        await send_json(
            send,
            401,
            {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"},
            headers=[(b"www-authenticate", b'Bearer realm="crisisctl"')],
        )
        return False
    return True


async def _invalidate(guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
    if not await _authorized(guard, scope, send, "cache invalidation"):
        return
    policies = guard.state.request_policies
    if policies is None:
        await send_json(
            send, 409, {"error": "this guard caches nothing: no route rule has a cache section"}
        )
        return
    try:
        data = json.loads(await _read_body(receive) or b"{}")
        prefix = data.get("prefix")
        if prefix is None and isinstance(data.get("route"), str):
            prefix = data["route"].split("{", 1)[0]  # keys start with the path
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError
    except (ValueError, AttributeError):
        await send_json(send, 400, {"error": 'the body must be JSON like {"prefix": "/api/items"}'})
        return
    try:
        dropped = await policies.invalidate(prefix)
    except Exception as exc:
        await send_json(
            send,
            503,
            {"error": f"the shared cache could not be reached ({type(exc).__name__}); "
                      "retry when the storage is back"},
        )  # fmt: skip
        return
    await send_json(send, 200, {"prefix": prefix, "dropped": dropped})


async def _switch_mode(guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
    if not await _authorized(guard, scope, send, "mode switching"):
        return
    body = await _read_body(receive)
    try:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError
    except ValueError:
        await send_json(send, 400, {"error": 'the body must be JSON like {"mode": "emergency"}'})
        return
    mode = data.get("mode")
    if mode not in MODES:
        await send_json(
            send, 400, {"error": f"unknown mode {mode!r}: use one of {', '.join(MODES)}"}
        )
        return
    client = scope.get("client")
    actor = str(data.get("actor") or (f"{client[0]}" if client else "unknown"))[:200]
    reason = str(data.get("reason") or "")[:500]
    # with Redis storage this stores the switch for the fleet and waits (≤ ~1.5 s) for the
    # instances' confirmations; the answer says how far the switch reached
    outcome = await guard.switch_mode(mode, actor=actor, reason=reason, source="http")
    await send_json(send, 200, {**guard.modes.describe(), "switch": outcome})


def status_head(
    state: GuardState, digest: Digest, limits: LimitsJSON
) -> list[dict[str, Any] | tuple[str, list[bytes]]]:
    """The status document but its per-route parts ("breakers", "routes"), which `digest`
    appends: everything an operator (or `crisisctl triage`) wants to know. In order; the
    "concurrency" member comes encoded already (`limits`: one part per route limiter, kept)."""
    return [
        {
            "service": "crisisctl-guard",
            "pid": state.pid,
            "started_at": state.started_wall,
            "uptime_s": round(time.time() - state.started_wall, 3),
            "compiled": compiled(),
            "mode": state.modes.describe(),
            "mode_scope": state.modes.scope,
            "mode_endpoint": "enabled" if state.mode_endpoint_enabled else "disabled",
            **digest.totals(),
        },
        ("concurrency", limits.chunks(state.concurrency)),
        {
            "running_after_timeout": state.running_after_timeout,
            "rate_limits": [policy.describe() for policy in state.policies.values()],
            "storage": state.storage,
            "operations": [op.describe() for op in operations()],
            "policies": (
                state.request_policies.describe() if state.request_policies is not None else None
            ),
            "internal_errors": state.internal_errors,
            "process": state.process.describe(state.clock()),
            "memory": state.memory.describe(state.clock()),
            "event_loop": state.event_loop.describe(state.clock()),
        },
    ]
