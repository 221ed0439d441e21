"""Operation quotas on real uvicorn servers (operation_app.py): background jobs answered 202 at
once still hold their slot, the route is refused at admission while the quota is full, and two
instances on one Redis share the quota, a killed one's slots coming back after the lease."""

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
OPERATIONS = {"job": {"max_concurrent": 2}, "export": {"max_concurrent_per_key": 1}}
ROUTES = [{"pattern": "/api/jobs", "methods": ["POST"], "quota": "job"}]


class Server:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        env = dict(os.environ, CRISISCTL_TEST_OPERATIONS=json.dumps(settings))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "operation_app:app", "--app-dir", str(APP_DIR),
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

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def servers(*settings: dict[str, Any]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for one in settings:
            started.append(Server(one))
        deadline = time.monotonic() + STARTUP_S
        for server in started:
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started:
            server.stop()
            server.log.close()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=10.0)


async def job(http: httpx.AsyncClient, server: Server, hold: float) -> httpx.Response:
    return await http.post(f"{server.url}/api/jobs?hold={hold}")


async def operation(http: httpx.AsyncClient, server: Server, name: str) -> dict[str, Any]:
    status = (await http.get(f"{server.url}/_crisis/status")).json()
    found: dict[str, Any] = status["policies"]["operations"]["quotas"][name]
    return found


async def test_background_jobs_hold_their_slot_past_their_202_and_the_route_is_refused() -> None:
    with servers({"operations": OPERATIONS, "routes": ROUTES}) as (server,):
        async with client() as http, asyncio.timeout(30):
            started = time.monotonic()
            assert (await job(http, server, 1.5)).status_code == 202
            assert (await job(http, server, 30.0)).status_code == 202
            refused = await job(http, server, 0.0)
            assert time.monotonic() - started < 1.5  # answered at once, both jobs still run
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["reason"] == "operation_quota"
            assert refused.json()["operation"] == "job"
            while (await job(http, server, 0.0)).status_code == 429:  # the 1.5 s job ends
                assert time.monotonic() - started < 10.0, "the finished job kept its slot"
                await asyncio.sleep(0.05)
            assert time.monotonic() - started >= 1.5
            held = await operation(http, server, "job")
            assert held["held_here"] >= 1 and held["refused_total"]["quota"] >= 1
            # anywhere in the app, through the lifespan state: one export per client at once
            slow = asyncio.create_task(http.get(f"{server.url}/api/export?hold=1"))
            async with asyncio.timeout(5):
                while True:
                    if (await operation(http, server, "export"))["held_here"] == 1:
                        break
                    await asyncio.sleep(0.02)
            second = await http.get(f"{server.url}/api/export")
            assert second.status_code == 429 and second.json() == {"refused": "quota_per_key"}
            assert (await slow).status_code == 200
            metrics = (await http.get(f"{server.url}/_crisis/metrics")).text
            assert 'crisisctl_guard_operations_total{operation="job",outcome="quota"}' in metrics


@pytest.mark.redis
@pytest.mark.slow
async def test_two_instances_share_an_operation_quota_and_a_killed_ones_slot_comes_back() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    lease_s = 1.0
    settings = {"operations": OPERATIONS, "routes": ROUTES, "storage": url,
                "storage_prefix": prefix, "quota_lease_s": lease_s}  # fmt: skip
    try:
        with servers(settings, settings) as (doomed, survivor):
            async with client() as http, asyncio.timeout(40):
                assert (await job(http, doomed, 60.0)).status_code == 202
                assert (await job(http, survivor, 60.0)).status_code == 202
                await asyncio.sleep(3 * lease_s)  # alive, each renews its lease
                assert (await job(http, doomed, 0.0)).status_code == 429
                assert (await job(http, survivor, 0.0)).status_code == 429
                doomed.stop(kill=True)
                killed_at = time.monotonic()
                while (await job(http, survivor, 0.0)).status_code == 429:
                    assert time.monotonic() - killed_at < lease_s + 3.0, "the slot never came back"
                    await asyncio.sleep(0.05)
                status = await operation(http, survivor, "job")
                assert status["max_concurrent"] == 2
    finally:
        delete_prefix(url, prefix)
