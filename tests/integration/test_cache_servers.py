"""The response cache in real uvicorn servers on 127.0.0.1 (tests/integration/cache_app.py):
single-flight under 100 concurrent misses, stale answers while the origin fails, no-store and
Vary honoured, and one Redis store shared by two server processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_services import REDIS_URL, delete_prefix, free_port, require_redis, unique_prefix

APP_DIR = Path(__file__).resolve().parent
STARTUP_S = 10.0


class CacheServer:
    """One uvicorn process serving cache_app:app with `settings`."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, CRISISCTL_TEST_CACHE=json.dumps(settings), PYTHONUNBUFFERED="1")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "cache_app:app", "--app-dir", str(APP_DIR),
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"uvicorn exited: {self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/_health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not answer in {STARTUP_S} s: {self.output()}")
                time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def calls(self, path: str) -> int:
        answer = httpx.get(f"{self.url}/_calls", trust_env=False, timeout=5.0).json()
        return int(answer["calls"].get(path, 0))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        self.log.close()


@contextlib.contextmanager
def cache_servers(*settings: dict[str, Any]) -> Iterator[list[CacheServer]]:
    servers = [CacheServer(s) for s in settings]
    try:
        deadline = time.monotonic() + STARTUP_S
        for server in servers:
            server.wait_ready(deadline)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def memory_server() -> Iterator[CacheServer]:
    with cache_servers({"store": "memory"}) as (server,):
        yield server


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10.0)


def test_a_hundred_concurrent_misses_cost_one_origin_call(memory_server: CacheServer) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(trust_env=False, timeout=15.0, limits=limits) as http:
            return await asyncio.gather(
                *(http.get(f"{memory_server.url}/slow/burst") for _ in range(100))
            )

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 100
    assert len({a.text for a in answers}) == 1
    assert sorted(a.headers["x-cache"] for a in answers).count("miss") == 1
    assert memory_server.calls("/slow/burst") == 1


def test_stale_is_served_while_the_origin_fails(memory_server: CacheServer) -> None:
    with client() as http:
        first = http.get(f"{memory_server.url}/flaky")
        assert first.headers["x-cache"] == "miss"
        time.sleep(1.2)  # past the 1 s ttl, inside the 60 s stale-if-error window
        try:
            for mode in ("503", "raise"):
                http.post(f"{memory_server.url}/_fail?mode={mode}")
                stale = http.get(f"{memory_server.url}/flaky")
                assert (stale.status_code, stale.headers["x-cache"]) == (200, "stale")
                assert stale.text == first.text
                assert int(stale.headers["age"]) >= 1
        finally:
            http.post(f"{memory_server.url}/_fail?mode=off")
        fresh = http.get(f"{memory_server.url}/flaky")
        assert fresh.headers["x-cache"] == "miss"
        assert fresh.text.split()[1] == "4"  # calls 2 and 3 failed and were masked


def test_a_no_store_response_is_never_cached(memory_server: CacheServer) -> None:
    with client() as http:
        bodies = [http.get(f"{memory_server.url}/nostore").text for _ in range(3)]
    assert bodies == ["nostore 1", "nostore 2", "nostore 3"]
    assert memory_server.calls("/nostore") == 3


def test_vary_keeps_one_entry_per_header_value(memory_server: CacheServer) -> None:
    with client() as http:
        url = f"{memory_server.url}/vary"
        fr = http.get(url, headers={"accept-language": "fr"})
        de = http.get(url, headers={"accept-language": "de"})
        fr_again = http.get(url, headers={"accept-language": "fr"})
        de_again = http.get(url, headers={"accept-language": "de"})
    assert (fr.text, de.text) == ("vary 1 fr", "vary 2 de")
    assert (fr_again.text, fr_again.headers["x-cache"]) == ("vary 1 fr", "hit")
    assert (de_again.text, de_again.headers["x-cache"]) == ("vary 2 de", "hit")


@pytest.mark.redis
def test_two_instances_share_one_redis_store() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    settings = {"store": "redis", "redis_url": url, "prefix": prefix}
    try:
        with cache_servers(settings, dict(settings)) as (one, two), client() as http:
            first = http.get(f"{one.url}/slow/shared")
            second = http.get(f"{two.url}/slow/shared")
            assert first.headers["x-cache"] == "miss"
            assert (second.headers["x-cache"], second.text) == ("hit", first.text)
            assert (one.calls("/slow/shared"), two.calls("/slow/shared")) == (1, 0)
            vary = http.get(f"{one.url}/vary", headers={"accept-language": "fr"})
            other = http.get(f"{two.url}/vary", headers={"accept-language": "de"})
            same = http.get(f"{two.url}/vary", headers={"accept-language": "fr"})
            assert (vary.text, other.headers["x-cache"]) == ("vary 1 fr", "miss")
            assert (same.text, same.headers["x-cache"]) == ("vary 1 fr", "hit")
    finally:
        delete_prefix(url, prefix)


@pytest.mark.redis
def test_concurrent_misses_on_two_instances_sharing_redis_cost_one_origin_call() -> None:
    url = require_redis(REDIS_URL)
    prefix = unique_prefix()
    settings = {"store": "redis", "redis_url": url, "prefix": prefix}

    async def burst(servers: list[CacheServer]) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(trust_env=False, timeout=15.0, limits=limits) as http:
            return await asyncio.gather(
                *(http.get(f"{servers[i % 2].url}/slow/fleet") for i in range(60))
            )

    try:
        with cache_servers(settings, dict(settings)) as servers:
            answers = asyncio.run(burst(servers))
            assert [a.status_code for a in answers] == [200] * 60
            assert len({a.text for a in answers}) == 1
            assert sum(s.calls("/slow/fleet") for s in servers) == 1
    finally:
        delete_prefix(url, prefix)
