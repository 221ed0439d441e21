"""The callgrind benchmarks' warm-up (benchmarks/guard_instructions.py, `warmup_of`).

The realistic app's counted requests must come from clients the guard has met, as they do in a
loaded server: a client's first response carries ``RateLimit-Policy`` too, which callgrind's
short runs would otherwise count on one request in six. Driven through the realistic guard
itself, in-process, with the same requests, in the same order, as the benchmark sends.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.overhead_apps import make_realistic_guard
from benchmarks.guard_instructions import request_cycle, warmup_of


def _scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _announcements(count: int, skip: int) -> list[bool]:
    """Whether each of `count` requests, after `skip` ones, got RateLimit-Policy."""
    app = make_realistic_guard()
    cycle = request_cycle("realistic_guard")
    seen: list[bool] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    names: list[bytes] = []  # the header names of the response being sent

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            names.extend(name for name, _ in message["headers"])

    async def drive() -> None:
        for i in range(skip + count):
            path, headers = next(cycle)
            names.clear()
            await app(_scope(path, headers), receive, send)
            assert b"ratelimit" in names
            if i >= skip:
                seen.append(b"ratelimit-policy" in names)
        await app.aclose()

    asyncio.run(drive())
    return seen


def test_only_the_realistic_variants_are_warmed_up() -> None:
    assert warmup_of("realistic_guard") == warmup_of("realistic_bare") == 1000
    assert warmup_of("guard") == warmup_of("bare") == 0


def test_after_the_warm_up_no_counted_request_is_a_first_contact() -> None:
    announced = _announcements(600, warmup_of("realistic_guard"))
    assert len(announced) == 600
    assert not any(announced)


def test_without_it_a_cold_server_announces_the_policy_to_each_new_client() -> None:
    # what the counted requests held before: the first visit of each client announced
    announced = _announcements(600, 0)
    assert all(announced)
