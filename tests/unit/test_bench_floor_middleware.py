"""The floor middleware of `guard_overhead` does the realistic app's jobs (it is no strawman).

`benchmarks/apps/floor_middleware.py` is the least a Python middleware does for the realistic
app: if it skipped a job, the floor it measures would be too low. It labels every request of
the cycle with its template, keys clients by the trusted proxy's header (and the peer when
the peer is not the proxy), refuses the 1,001st request of one client within a second without
consuming it, and sends a RateLimit header on every admitted response.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps import floor_middleware
from benchmarks.apps.floor_middleware import UNMATCHED, build_floor_app
from benchmarks.apps.realistic_app import requests, route_templates


def _scope(path: str, forwarded_for: str, peer: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": (peer, 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1"), (b"x-forwarded-for", forwarded_for.encode())],
    }  # fmt: skip


async def _get(app: Any, scope: dict[str, Any]) -> tuple[int, dict[bytes, bytes]]:
    started: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    await app(scope, receive, send)
    return started[0]["status"], dict(started[0]["headers"])


def test_every_request_of_the_cycle_gets_its_template_and_a_ratelimit_header() -> None:
    app = build_floor_app()
    templates = route_templates()
    for i, (path, ip) in enumerate(requests(200)):
        assert app.label(path) == templates[i % len(templates)]
        status, headers = asyncio.run(_get(app, _scope(path, ip)))
        assert status == 200
        assert headers[b"ratelimit"].startswith(b'"1000-per-1s";r=')
    assert app.label("/nowhere") == UNMATCHED
    assert sum(sum(counts) for counts in app.counts.values()) == 200


def test_clients_are_keyed_by_the_proxy_header_only_behind_the_proxy() -> None:
    app = build_floor_app()
    assert app.client(_scope("/", "192.0.2.1, 10.20.0.7")) == "10.20.0.7"
    assert app.client(_scope("/", "10.20.0.7", peer="198.51.100.9")) == "198.51.100.9"


def test_the_1001st_request_of_a_second_is_refused_and_consumes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(floor_middleware, "_clock", lambda: 1000.0)  # one instant
    app = build_floor_app()
    path = requests(1)[0][0]

    async def burst() -> list[int]:
        return [(await _get(app, _scope(path, "10.20.0.1")))[0] for _ in range(1002)]

    statuses = asyncio.run(burst())
    assert statuses[:1000] == [200] * 1000
    assert statuses[1000:] == [429, 429]
    assert asyncio.run(_get(app, _scope(path, "10.20.0.2")))[0] == 200  # another client
