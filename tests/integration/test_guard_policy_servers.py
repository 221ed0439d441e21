"""The guard applies caching, quotas and tiers itself: real uvicorn servers on 127.0.0.1 running
`Guard(service, config)` (policy_app.py), one instance in memory, two sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from redis_services import REDIS_URL, delete_prefix, free_port, require_redis, unique_prefix

APP_DIR = Path(__file__).resolve().parent
STARTUP_S = 20.0
SCANS = {"pattern": "/api/scans", "methods": ["POST"], "max_concurrent": 2}
ITEMS = {
    "pattern": "/api/items/{id}",
    "cache": {"ttl_s": 0.5, "stale_if_error_s": 600, "single_flight_wait_s": 10},
}
TOKEN = "policy-test-token"


class PolicyServer:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        env = dict(os.environ, CRISISCTL_TEST_POLICY=json.dumps(settings), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "policy_app:app", "--app-dir", str(APP_DIR),
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"uvicorn exited:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not answer in {STARTUP_S} s:\n{self.output()}")
                time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@contextlib.contextmanager
def servers(*settings: dict[str, Any]) -> Iterator[list[PolicyServer]]:
    started: list[PolicyServer] = []
    try:
        for one in settings:
            started.append(PolicyServer(one))
        deadline = time.monotonic() + STARTUP_S
        for server in started:
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started:
            server.stop()


def client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(trust_env=False, timeout=60.0, limits=limits)


async def scan(http: httpx.AsyncClient, server: PolicyServer, hold: float = 0.0) -> httpx.Response:
    return await http.post(f"{server.url}/api/scans?hold={hold}")


async def policies(http: httpx.AsyncClient, server: PolicyServer) -> dict[str, Any]:
    document: dict[str, Any] = (await http.get(f"{server.url}/policies")).json()
    return document


async def wait_in_flight(http: httpx.AsyncClient, server: PolicyServer, count: int) -> None:
    async with asyncio.timeout(10):
        while True:
            quotas = (await policies(http, server))["quotas"]["routes"]
            if quotas["POST /api/scans"]["in_flight_here"] == count:
                return
            await asyncio.sleep(0.02)


async def set_failing(http: httpx.AsyncClient, server: PolicyServer, failing: bool) -> None:
    await http.post(f"{server.url}/origin/fail", json={"fail": failing})


async def test_through_guard_the_third_concurrent_scan_gets_429_and_succeeds_after_the_first() -> (
    None
):
    with servers({"routes": [SCANS]}) as (server,):
        async with client() as http, asyncio.timeout(30):
            assert (await scan(http, server, hold=1.6)).status_code == 200  # service time 1.6 s
            first = asyncio.create_task(scan(http, server, hold=2.0))
            await wait_in_flight(http, server, 1)
            second = asyncio.create_task(scan(http, server, hold=4.0))
            await wait_in_flight(http, server, 2)
            refused = await scan(http, server)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "2"
            assert refused.json()["reason"] == "quota"
            assert (await first).status_code == 200
            assert (await scan(http, server)).status_code == 200
            assert (await second).status_code == 200
            status = (await http.get(f"{server.url}/_crisis/status")).json()
            route = status["policies"]["quotas"]["routes"]["POST /api/scans"]
            assert route["refused_total"]["quota"] == 1 and route["max_concurrent"] == 2
            metrics = (await http.get(f"{server.url}/_crisis/metrics")).text
            assert (
                'crisisctl_guard_quota_requests_total{outcome="quota",route="POST /api/scans"} 1.0'
                in metrics
            )


@pytest.mark.redis
async def test_two_guarded_instances_on_one_redis_share_the_quota() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    settings = {"routes": [SCANS], "storage": url, "storage_prefix": prefix}
    try:
        with servers(settings, settings) as (a, b):
            async with client() as http, asyncio.timeout(30):
                one = asyncio.create_task(scan(http, a, hold=2.0))
                two = asyncio.create_task(scan(http, b, hold=2.0))
                await wait_in_flight(http, a, 1)
                await wait_in_flight(http, b, 1)
                assert (await scan(http, a)).status_code == 429
                assert (await scan(http, b)).status_code == 429
                assert (await one).status_code == 200 and (await two).status_code == 200
                assert (await scan(http, b)).status_code == 200
    finally:
        delete_prefix(url, prefix)


@pytest.mark.redis
@pytest.mark.slow
async def test_a_crashed_guarded_instances_slots_come_back_after_the_lease() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    lease_s = 1.0
    settings = {"routes": [SCANS], "storage": url, "storage_prefix": prefix,
                "quota_lease_s": lease_s}  # fmt: skip
    try:
        with servers(settings, settings) as (doomed, survivor):
            async with client() as http, asyncio.timeout(40):
                held = [asyncio.create_task(scan(http, doomed, hold=30.0)) for _ in range(2)]
                await wait_in_flight(http, doomed, 2)
                await asyncio.sleep(3 * lease_s)  # alive, it renews its leases
                assert (await scan(http, survivor)).status_code == 429
                doomed.kill()
                killed_at = time.monotonic()
                while (await scan(http, survivor)).status_code == 429:
                    assert time.monotonic() - killed_at < lease_s + 3.0, "slots never came back"
                    await asyncio.sleep(0.05)
                for task in held:
                    with pytest.raises(httpx.TransportError):
                        await task
    finally:
        delete_prefix(url, prefix)


async def test_a_hundred_concurrent_misses_make_one_origin_call() -> None:
    with servers({"routes": [ITEMS]}) as (server,):
        async with client() as http, asyncio.timeout(60):
            answers = await asyncio.gather(
                *[http.get(f"{server.url}/api/items/7?delay=0.5") for _ in range(100)]
            )
            assert all(r.status_code == 200 for r in answers)
            assert {r.json()["call"] for r in answers} == {1}
            assert (await http.get(f"{server.url}/origin/calls")).json() == {"/api/items/7": 1}
            cache = (await policies(http, server))["cache"]["routes"]["/api/items/{id}"]
            assert cache["misses"] == 1 and cache["coalesced"] == 99


async def test_stale_is_served_while_the_origin_fails_and_while_the_breaker_is_open() -> None:
    breaker = {"min_calls": 3, "failure_ratio": 0.5, "open_s": 30, "window_s": 10}
    with servers({"routes": [ITEMS], "breaker": breaker}) as (server,):
        async with client() as http, asyncio.timeout(30):
            first = await http.get(f"{server.url}/api/items/1")
            assert first.headers["x-cache"] == "miss"
            await asyncio.sleep(0.6)  # past its 0.5 s ttl: stale, inside stale-if-error
            await set_failing(http, server, True)
            stale = await http.get(f"{server.url}/api/items/1")
            assert stale.status_code == 200 and stale.headers["x-cache"] == "stale"
            assert stale.json() == first.json()
            # another item of the route has nothing cached: its 500s open the route's breaker
            for _ in range(5):
                await http.get(f"{server.url}/api/items/2")
            refused = await http.get(f"{server.url}/api/items/2")
            assert refused.status_code == 503 and refused.json()["reason"] == "circuit_open"
            calls_before = (await http.get(f"{server.url}/origin/calls")).json()["/api/items/1"]
            answered = await http.get(f"{server.url}/api/items/1")
            assert answered.status_code == 200 and answered.headers["x-cache"] == "stale"
            calls_after = (await http.get(f"{server.url}/origin/calls")).json()["/api/items/1"]
            assert calls_after == calls_before  # the breaker kept the origin out of it


async def test_no_store_answers_are_never_cached() -> None:
    with servers({"routes": [ITEMS]}) as (server,):
        async with client() as http, asyncio.timeout(30):
            for call in range(1, 4):
                answer = await http.get(f"{server.url}/api/items/3?cc=no-store")
                assert answer.headers["x-cache"] == "miss"
                assert answer.json()["call"] == call
            cache = (await policies(http, server))["cache"]["routes"]["/api/items/{id}"]
            assert cache["stored"] == 0


async def test_rate_limits_apply_per_tier_and_a_raising_key_function_is_the_default_tier() -> None:
    settings = {
        "routes": [{"pattern": "/api/limited", "rate_limit": "2/minute"}],
        "tiers": {"free": {}, "pro": {"rate_limit": "5/minute"}},
        "default_tier": "free",
        "api_keys": {"alice-key": "free", "bob-key": "pro"},
    }
    with servers(settings) as (server,):
        async with client() as http, asyncio.timeout(30):

            async def statuses(n: int, **headers: str) -> list[int]:
                url = f"{server.url}/api/limited"
                return [(await http.get(url, headers=headers)).status_code for _ in range(n)]

            assert await statuses(3, **{"x-api-key": "alice-key"}) == [200, 200, 429]
            assert await statuses(6, **{"x-api-key": "bob-key"}) == [200] * 5 + [429]
            # a raising key function: the peer address in the free tier, never a failure
            assert await statuses(3, **{"x-break": "1"}) == [200, 200, 429]
            limited = await http.get(f"{server.url}/api/limited", headers={"x-api-key": "bob-key"})
            assert limited.headers["retry-after"]


async def test_cache_invalidation_through_the_control_endpoint_needs_the_token() -> None:
    with servers({"routes": [ITEMS]}, {"routes": [ITEMS], "token": TOKEN}) as (open_, locked):
        async with client() as http, asyncio.timeout(30):
            body = {"prefix": "/api/items/"}
            disabled = await http.post(f"{open_.url}/_crisis/cache/invalidate", json=body)
            assert disabled.status_code == 403
            for n in (1, 2):
                await http.get(f"{locked.url}/api/items/{n}")
            url = f"{locked.url}/_crisis/cache/invalidate"
            assert (await http.post(url, json=body)).status_code == 401
            done = await http.post(url, json=body, headers={"authorization": f"Bearer {TOKEN}"})
            assert done.status_code == 200 and done.json() == {
                "prefix": "/api/items/",
                "dropped": 2,
            }
            again = await http.get(f"{locked.url}/api/items/1")
            assert again.headers["x-cache"] == "miss" and again.json()["call"] == 2


def test_guard_cache_invalidate_cli_drops_entries_and_redacts_the_token() -> None:
    from typer.testing import CliRunner

    from crisisctl.cli.main import app as cli

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(
            cli, ["guard", "cache-invalidate", *args], env={"CRISISCTL_GUARD_TOKEN": ""}
        )
        return result.exit_code, result.output

    code, out = run("http://127.0.0.1:1", "/api")
    assert code == 2 and "no token given" in out
    code, out = run("http://127.0.0.1:1", "api", "--token", "t")
    assert code == 2 and "must be a path starting with '/'" in out
    with servers({"routes": [ITEMS], "token": TOKEN}) as (server,):
        with httpx.Client(trust_env=False) as http:
            for n in (1, 2, 3):
                assert http.get(f"{server.url}/api/items/{n}").status_code == 200
        code, out = run(server.url, "/api/items/", "--token", "wrong-token")
        assert code == 2 and "refused the invalidation (HTTP 401)" in out
        assert "wrong-token" not in out
        code, out = run(server.url, "/api/items/", "--token", TOKEN)
        assert code == 0 and "dropped 3 cached responses under /api/items/" in out
    assert "Traceback" not in out
