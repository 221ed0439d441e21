"""The guard's control surface under its prefix (default ``/_crisis``).

    GET  <prefix>/health    200 {"status": "ok", "mode": …} — answered even under overload
    GET  <prefix>/status    JSON: mode, limits, in-flight, shed counts, breakers, latency
    GET  <prefix>/metrics   Prometheus text exposition
    GET  <prefix>/mode      the current mode and its history
    POST <prefix>/mode      {"mode": "emergency", "reason": "…", "actor": "…"}
                            needs ``Authorization: Bearer <token>``; disabled without a token

These paths are critical: never rate limited, queued or shed. Responses are built here without
any framework so the guard works around any ASGI app.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crisisctl._pure import compiled
from crisisctl.guard.metrics import STATUS_CLASSES
from crisisctl.guard.modes import MODES
from crisisctl.guard.track import operations
from crisisctl.guard.types import Receive, Scope, Send
from crisisctl.stats import LatencyHistogram

if TYPE_CHECKING:
    from crisisctl.guard.middleware import Guard

ENDPOINTS = ("health", "status", "metrics", "mode")
MAX_BODY = 16 * 1024

REFUSAL_MESSAGES = {
    "emergency": "the service is in emergency mode and sheds this low-priority route; retry later",
    "circuit_open": "this route is failing and its circuit breaker is open; retry later",
    "queue_full": "the service is at its concurrency limit and its queue is full; retry later",
    "queue_timeout": "the service is at its concurrency limit and the request waited too long",
    "overloaded": "the service is overloaded and sheds new requests at once; retry later",
}


def is_control_path(path: str, prefix: str) -> bool:
    """Whether `path` is under the control prefix."""
    return len(path) == len(prefix) or path[len(prefix)] == "/"


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
    allowed = ("GET", "HEAD", "POST") if name == "mode" else ("GET", "HEAD")
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
    elif name == "metrics":
        await send_body(send, 200, generate_latest(guard.registry), CONTENT_TYPE_LATEST.encode())
    elif name == "status":
        await send_json(send, 200, status_document(guard))
    elif method == "POST":
        await _switch_mode(guard, scope, receive, send)
    else:
        await send_json(send, 200, guard.modes.describe())


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


def _bearer(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token:
                stripped: bytes = token.strip()
                return stripped
    return None


async def _switch_mode(guard: Guard, scope: Scope, receive: Receive, send: Send) -> None:
    if guard.token is None:
        await send_json(
            send,
            403,
            {"error": "mode switching over HTTP is disabled: configure a token "
                      "(GuardConfig(token=…) or CRISISCTL_GUARD_TOKEN) to enable it"},
        )  # fmt: skip
        return
    given = _bearer(scope)
    if given is None or not hmac.compare_digest(given, guard.token):
        await send_json(
            send,
            401,
            {"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"},
            headers=[(b"www-authenticate", b'Bearer realm="crisisctl"')],
        )
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


def status_document(guard: Guard) -> dict[str, Any]:
    """Everything an operator (or `crisisctl triage`) wants to know, as JSON."""
    now = guard._clock()
    routes = []
    recent_all = LatencyHistogram()
    totals = [0, 0, 0, 0, 0, 0]
    shed: dict[str, int] = {}
    in_flight = 0
    for stats in guard.route_stats.values():
        recent = stats.recent()
        recent_all.merge(recent)
        counts = stats.totals()
        for i, n in enumerate(counts):
            totals[i] += n
        for reason, n in stats.rejected.items():
            shed[reason] = shed.get(reason, 0) + n
        in_flight += stats.in_flight
        routes.append(
            {
                "route": stats.label,
                "requests": sum(counts),
                "status_classes": _classes(counts),
                "rejected": dict(stats.rejected),
                "in_flight": stats.in_flight,
                "latency_ms": recent.summary().as_dict(),
            }
        )
    conc = guard.concurrency
    health = guard.storage_health
    return {
        "service": "crisisctl-guard",
        "pid": os.getpid(),
        "started_at": guard.started_wall,
        "uptime_s": round(time.time() - guard.started_wall, 3),
        "compiled": compiled(),
        "mode": guard.modes.describe(),
        "mode_scope": guard.modes.scope,
        "mode_endpoint": "enabled" if guard.token is not None else "disabled",
        "in_flight": in_flight,
        "requests": {"total": sum(totals), "status_classes": _classes(totals)},
        "shed": shed,
        "shed_total": sum(shed.values()),
        "concurrency": conc.describe() if conc is not None else {"mode": "off"},
        "rate_limits": [policy.describe() for policy in guard.policies.values()],
        "storage": health.describe()
        if health is not None
        else {"backend": "memory", "healthy": True},
        "breakers": {label: b.describe(now) for label, b in guard.breakers.items()},
        "latency_window_s": 60,
        "latency_ms": recent_all.summary().as_dict(),
        "routes": sorted(routes, key=lambda r: -int(r["requests"])),
        "operations": [op.describe() for op in operations()],
        "internal_errors": guard.internal_errors,
    }


def _classes(counts: list[int]) -> dict[str, int]:
    out = {cls: counts[i + 1] for i, cls in enumerate(STATUS_CLASSES)}
    if counts[0]:
        out["unknown"] = counts[0]
    return out
