"""The floor of `guard_overhead`'s realistic app: the least a Python middleware does for its jobs.

Issue 14 (point 13) asks that the guard add ≤ 10 µs per request on the realistic app
(`realistic_app.py`). What is the least *any* pure-ASGI Python middleware can add there, doing
the same jobs and nothing else? `FloorMiddleware` is that, written for speed rather than for
safety or features:

* route labelling: a per-path cache, and on a miss one combined regex of the 50 templates;
* the client behind the trusted proxy: the right-most ``X-Forwarded-For`` entry, cached by the
  header's bytes;
* the two stacked per-client limits (``1000/second;50000/minute``) as GCRA, one list of two
  theoretical arrival times per client; a request over either limit gets a 429 and consumes
  nothing;
* one ``RateLimit`` header on every admitted response (the first limit's remaining and reset);
* a latency histogram and status counts per route label.

What it leaves out is what the guard does beside these jobs: concurrency limiting (adaptive or
not), timeouts, circuit breakers, critical paths, per-method counts, bounded label cardinality,
``RateLimit-Policy``, loop health, the control surface and every error path. So the floor is
a lower bound, not a peer a user would pick: the guard's cost above it is the price of
those features (and of their being safe), the floor's own cost the price of doing the
benchmark's jobs in Python at all on the machine measured.
tests/unit/test_bench_floor_middleware.py checks that it does these jobs (it labels every
route, keys clients by the proxy header, refuses the 1,001st request of a second).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable

from benchmarks.apps.realistic_app import TRUSTED_PROXY, build_app, route_templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FloorMiddleware", "build_floor_app"]

UNMATCHED = "<unmatched>"
#: the realistic app's two limits: (emission interval s, burst tolerance s)
_PER_SECOND = (1.0 / 1000, 1.0)
_PER_MINUTE = (60.0 / 50000, 60.0)
_CACHE_LIMIT = 8192
_clock = time.monotonic


def _template_regex(template: str) -> str:
    """A Starlette template as a regex group body: each parameter one non-empty segment."""
    escaped = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
    return re.sub(r"\{[^}]+\}", "[^/]+", escaped)


class FloorMiddleware:
    """The realistic app's jobs and nothing else (see the module docstring)."""

    def __init__(self, app: ASGIApp, templates: list[str]) -> None:
        self.app = app
        self.templates = templates
        self.combined = re.compile(
            "(?:" + "|".join(f"({_template_regex(t)})" for t in templates) + ")/?$"
        )
        self.routes: dict[str, str] = {}
        self.keys: dict[bytes, str] = {}
        #: client -> [theoretical arrival time of the second limit, of the minute limit]
        self.state: dict[str, list[float]] = {}
        self.histograms: dict[str, dict[int, int]] = {t: {} for t in [*templates, UNMATCHED]}
        self.counts: dict[str, list[int]] = {t: [0] * 6 for t in [*templates, UNMATCHED]}

    def label(self, path: str) -> str:
        label = self.routes.get(path)
        if label is None:
            found = self.combined.match(path)
            label = self.templates[found.lastindex - 1] if found and found.lastindex else UNMATCHED
            if len(self.routes) >= _CACHE_LIMIT:
                self.routes.clear()
            self.routes[path] = label
        return label

    def client(self, scope: Scope) -> str:
        peer: str = scope["client"][0] if scope.get("client") else ""
        if peer != TRUSTED_PROXY:
            return peer
        forwarded: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value
        if forwarded is None:
            return peer
        key = self.keys.get(forwarded)
        if key is None:
            key = forwarded.decode("latin-1").rsplit(",", 1)[-1].strip() or peer
            if len(self.keys) >= _CACHE_LIMIT:
                self.keys.clear()
            self.keys[forwarded] = key
        return key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = _clock()
        label = self.label(scope["path"])
        key = self.client(scope)
        tats = self.state.get(key)
        if tats is None:
            tats = self.state[key] = [start, start]
        second = max(tats[0], start) + _PER_SECOND[0]
        minute = max(tats[1], start) + _PER_MINUTE[0]
        if second - start > _PER_SECOND[1] or minute - start > _PER_MINUTE[1]:
            await send({"type": "http.response.start", "status": 429, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            self.counts[label][4] += 1
            return
        tats[0] = second
        tats[1] = minute
        remaining = int((_PER_SECOND[1] - (second - start)) / _PER_SECOND[0])
        header = (b"ratelimit", b'"1000-per-1s";r=%d;t=1' % remaining)
        status = 0

        def wrapped(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            us = int((_clock() - start) * 1e6)
            bucket = us if us < 2048 else 2048 + us.bit_length()
            histogram = self.histograms[label]
            histogram[bucket] = histogram.get(bucket, 0) + 1
            self.counts[label][status // 100 if 0 < status < 600 else 0] += 1


def build_floor_app() -> FloorMiddleware:
    """The realistic app behind the floor middleware."""
    return FloorMiddleware(build_app(), route_templates())
