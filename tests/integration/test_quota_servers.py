"""Concurrency quotas and tiers in real uvicorn servers on 127.0.0.1 (quota_app.py): one
instance in memory, two instances sharing Redis or a Redis Cluster, a killed instance whose
slots come back after the lease, per-key quotas by tier, a raising key function."""

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
from redis_services import (
    CLUSTER_URL,
    REDIS_URL,
    delete_prefix,
    free_port,
    require_cluster,
    require_redis,
    unique_prefix,
)

APP_DIR = Path(__file__).resolve().parent
STARTUP_S = 15.0
SCANS = {"pattern": "/api/scans", "methods": ["POST"], "max_concurrent": 2}


class QuotaServer:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        env = dict(os.environ, CRISISCTL_TEST_QUOTA=json.dumps(settings), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "quota_app:app", "--app-dir", str(APP_DIR),
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
def quota_servers(*settings: dict[str, Any]) -> Iterator[list[QuotaServer]]:
    servers: list[QuotaServer] = []
    try:
        for one in settings:
            servers.append(QuotaServer(one))
        deadline = time.monotonic() + STARTUP_S
        for server in servers:
            server.wait_ready(deadline)
        yield servers
    finally:
        for server in servers:
            server.stop()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=60.0)


async def scan(
    http: httpx.AsyncClient, server: QuotaServer, hold: float = 0.0, **headers: str
) -> httpx.Response:
    return await http.post(f"{server.url}/api/scans?hold={hold}", headers=headers)


async def wait_in_flight(http: httpx.AsyncClient, server: QuotaServer, count: int) -> None:
    """Until `count` scans are in flight in `server` (the background ones have arrived)."""
    async with asyncio.timeout(10):
        while True:
            status = (await http.get(f"{server.url}/quota")).json()
            if status["routes"]["POST /api/scans"]["in_flight_here"] == count:
                return
            await asyncio.sleep(0.02)


async def test_the_third_concurrent_scan_gets_429_and_succeeds_after_the_first_ends() -> None:
    with quota_servers({"routes": [SCANS]}) as (server,):
        async with client() as http, asyncio.timeout(30):
            warm = await scan(http, server, hold=1.6)  # the service time: 1.6 s
            assert warm.status_code == 200
            first = asyncio.create_task(scan(http, server, hold=2.0))
            await wait_in_flight(http, server, 1)
            second = asyncio.create_task(scan(http, server, hold=4.0))
            await wait_in_flight(http, server, 2)
            refused = await scan(http, server)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "2"  # 1.6 s rounded up
            assert refused.json()["reason"] == "quota"
            assert (await first).status_code == 200
            assert (await scan(http, server)).status_code == 200
            assert (await second).status_code == 200


@pytest.mark.redis
@pytest.mark.parametrize("where", ["redis", "cluster"])
async def test_two_instances_on_one_redis_share_the_quota(where: str) -> None:
    url = require_redis(REDIS_URL) if where == "redis" else require_cluster(CLUSTER_URL)
    prefix = unique_prefix()
    settings = {"routes": [SCANS], "storage": url, "storage_prefix": prefix}
    try:
        with quota_servers(settings, settings) as (a, b):
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
async def test_a_killed_instances_slots_come_back_after_the_lease() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    lease_s = 1.0
    settings = {"routes": [SCANS], "storage": url, "storage_prefix": prefix,
                "quota_lease_s": lease_s}  # fmt: skip
    try:
        with quota_servers(settings, settings) as (doomed, survivor):
            async with client() as http, asyncio.timeout(40):
                held = [asyncio.create_task(scan(http, doomed, hold=30.0)) for _ in range(2)]
                await wait_in_flight(http, doomed, 2)
                await asyncio.sleep(3 * lease_s)  # alive, the doomed instance renews its leases
                assert (await scan(http, survivor)).status_code == 429
                doomed.kill()
                killed_at = time.monotonic()
                while (await scan(http, survivor)).status_code == 429:
                    assert time.monotonic() - killed_at < lease_s + 3.0, "slots never came back"
                    await asyncio.sleep(0.05)
                assert time.monotonic() - killed_at > lease_s / 3  # the lease, not a release
                for task in held:
                    with pytest.raises(httpx.TransportError):
                        await task
    finally:
        delete_prefix(url, prefix)


async def test_per_key_quota_by_tier_and_a_raising_key_function() -> None:
    route = {"pattern": "/api/scans", "methods": ["POST"], "max_concurrent": 10,
             "max_concurrent_per_key": 1}  # fmt: skip
    settings = {
        "routes": [route],
        "tiers": {"free": {}, "pro": {"max_concurrent_per_key": 2}},
        "default_tier": "free",
        "api_keys": {"alice-key": "free", "bob-key": "pro"},
    }
    with quota_servers(settings) as (server,):
        async with client() as http, asyncio.timeout(30):
            alice = asyncio.create_task(scan(http, server, hold=1.5, **{"x-api-key": "alice-key"}))
            bob = [
                asyncio.create_task(scan(http, server, hold=1.5, **{"x-api-key": "bob-key"}))
                for _ in range(2)
            ]
            await wait_in_flight(http, server, 3)
            again = await scan(http, server, **{"x-api-key": "alice-key"})
            assert again.status_code == 429 and again.json()["reason"] == "quota_per_key"
            assert (await scan(http, server, **{"x-api-key": "bob-key"})).status_code == 429
            # a key function that raises: served, in the default tier, and logged
            broken = await scan(http, server, **{"x-break": "1"})
            assert broken.status_code == 200
            assert broken.json() == {"key": "127.0.0.1", "tier": "free"}
            served = await alice
            assert served.json()["tier"] == "free" and served.json()["key"].startswith("apikey:")
            assert [(await b).json()["tier"] for b in bob] == ["pro", "pro"]
        assert "the key function raised LookupError" in server.output()
        assert "alice-key" not in server.output()
