"""The realistic app of the guard benchmarks is as realistic as it says.

`benchmarks/apps/realistic_app.py`: its request cycle reaches all 50 parameterised routes
(never a 404), from 1,000 distinct clients named in X-Forwarded-For; the wrk script sends that
same cycle; and behind the guard every client is its own rate-limit key (the proxy is trusted).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.realistic_app import (
    CLIENTS,
    CYCLE,
    ROUTE_COUNT,
    build_app,
    requests,
    route_templates,
    wrk_script,
)


def test_the_cycle_reaches_every_route_from_every_client() -> None:
    cycle = requests()
    assert len(set(route_templates())) == ROUTE_COUNT == 50
    assert all("{" in t for t in route_templates())
    assert len({ip for _, ip in cycle}) == CLIENTS == 1000
    app = build_app()
    matched = set()
    for path, _ in cycle[:500]:
        for route in app.routes:
            match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
            if match.name == "FULL":
                matched.add(route.path)  # type: ignore[attr-defined]
                break
        else:
            raise AssertionError(f"{path} matches no route")
    assert len(matched) == ROUTE_COUNT


def test_the_wrk_script_sends_the_same_cycle() -> None:
    script = wrk_script()
    sent = re.findall(
        r'wrk\.format\("GET", "([^"]+)", \{\["X-Forwarded-For"\] = "([^"]+)"\}\)', script
    )
    assert len(sent) == CYCLE
    assert sent == [tuple(r) for r in requests()]


async def _status(app: Any, path: str, forwarded_for: str) -> int:
    """One GET through `app` from the proxy at 127.0.0.1 for the client `forwarded_for`."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1"), (b"x-forwarded-for", forwarded_for.encode())],
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


def test_behind_the_guard_each_client_behind_the_proxy_has_its_own_limit() -> None:
    from benchmarks.apps.realistic_app import TRUSTED_PROXY

    from crisisctl.guard import Guard, GuardConfig

    guard = Guard(build_app(), GuardConfig(rate_limit="2/minute", trusted_proxies=(TRUSTED_PROXY,)))
    path = requests(1)[0][0]

    async def scenario() -> tuple[list[int], int]:
        first = [await _status(guard, path, "10.20.0.1") for _ in range(3)]
        return first, await _status(guard, path, "10.20.0.2")

    first, other = asyncio.run(scenario())
    assert first == [200, 200, 429]
    assert other == 200


def test_every_path_of_the_cycle_is_distinct_and_outnumbers_the_route_cache() -> None:
    paths = [path for path, _ in requests()]
    assert len(set(paths)) == len(paths) == CYCLE > 8192


def test_the_calibration_app_does_its_ten_microseconds_of_work_and_answers_the_same(
    monkeypatch: Any,
) -> None:
    """`build_app(work_us=10)` (guard_overhead's ``realistic_work10``) is the bare app plus a
    10 µs busy wait per routed request: its handlers answer what the bare app's do, a request
    takes 10 µs longer (measured, so a wait that returned early would fail), and it never sleeps
    or yields to the loop (a wait that slept instead would fail).

    The wait is measured on the clock it spins on, not as thread CPU time: on a VM whose host
    steals the vCPU, the kernel leaves stolen time out of the thread's CPU clock, so a busy wait of
    10 µs of wall time can read as 3 µs of CPU (CI read 2.7)."""
    import time

    cycle = requests(200)
    bare, working = build_app(), build_app(work_us=10.0)

    async def serve(app: Any) -> list[int]:
        return [await _status(app, path, ip) for path, ip in cycle]

    def refuse(*_: object) -> None:
        raise AssertionError("the calibration app slept or yielded instead of working")

    monkeypatch.setattr(time, "sleep", refuse)
    monkeypatch.setattr(asyncio, "sleep", refuse)
    assert asyncio.run(serve(working)) == asyncio.run(serve(bare)) == [200] * len(cycle)

    async def differences() -> list[float]:
        """Each request timed on both apps back to back (which first alternates), so a slow
        spell of the host falls on both: the working app's time minus the bare app's, µs."""
        clock = time.perf_counter
        out = []
        for i, (path, ip) in enumerate(cycle * 3):
            first, second = (working, bare) if i % 2 else (bare, working)
            t0 = clock()
            await _status(first, path, ip)
            t1 = clock()
            await _status(second, path, ip)
            t2 = clock()
            took = {id(first): t1 - t0, id(second): t2 - t1}
            out.append((took[id(working)] - took[id(bare)]) * 1e6)
        return out

    # the median pair: a host that slowed down between two requests moves a few pairs only
    added = statistics.median(asyncio.run(differences()))
    assert added >= 9.0, f"the calibration app added {added:.1f} µs per request, not 10"
