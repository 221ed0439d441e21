"""The guard's refusals: the JSON answers (and their cached bodies) of a request it sheds —
emergency shedding, an open circuit, the concurrency limit (503) or a rate limit (429).

Compiled with the rest of the request path (see `crisisctl._accelerated`).
"""

from __future__ import annotations

import json

from crisisctl.guard import control
from crisisctl.guard.ratelimit import Decision, RateLimitPolicy
from crisisctl.guard.runtime import RouteRuntime
from crisisctl.guard.types import Send


async def refuse(
    route: RouteRuntime,
    send: Send,
    status: int,
    reason: str,
    retry_s: float,
    bodies: dict[tuple[str, str], bytes],
) -> None:
    """Answer `status` for `reason` (counted on the route) with a JSON body and Retry-After."""
    route.stats.reject(reason)
    route.counts[status // 100] += 1
    body = refusal_body(bodies, reason, route.label)
    await control.send_body(send, status, body, b"application/json", retry_after=retry_s)


def refusal_body(bodies: dict[tuple[str, str], bytes], reason: str, label: str) -> bytes:
    """The JSON body refusing a request to `label` for `reason`, cached in `bodies`."""
    body = bodies.get((reason, label))
    if body is None:
        body = json.dumps(
            {"error": control.REFUSAL_MESSAGES.get(reason, "the service is overloaded"),
             "reason": reason, "route": label},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        if len(bodies) < 4096:
            bodies[(reason, label)] = body
    return body


async def refuse_rate(
    route: RouteRuntime, send: Send, policy: RateLimitPolicy, decision: Decision, with_headers: bool
) -> None:
    """Answer 429 for the limit `decision` broke (counted on the route), with RateLimit header
    lines when `with_headers`."""
    route.stats.reject("rate_limited")
    route.counts[4] += 1
    limit = policy.limits[decision.limit_index]
    headers = policy.headers(decision) if with_headers else []
    await control.send_json(
        send,
        429,
        {"error": f"rate limit exceeded ({limit.amount} requests per {limit.period:g} s)",
         "reason": "rate_limited", "route": route.label,
         "retry_after_s": round(decision.retry_after_s, 3)},
        retry_after=decision.retry_after_s,
        headers=headers,
    )  # fmt: skip
