"""The real Redis servers the tests use (never mocks), found or started on loopback only.

    CRISISCTL_TEST_REDIS_URL          one server (default redis://127.0.0.1:6379/15)
    CRISISCTL_TEST_REDIS_CLUSTER_URL  a three-master Redis Cluster (default
                                      redis+cluster://127.0.0.1:7301), started by
                                      scripts/ensure-redis-cluster.sh when it does not answer

A test that needs one of them fails with what to do when it is missing: it never skips.
`RedisServer` is a throw-away redis-server on a free port that a test may kill and restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import redis.cluster

from crisisctl.guard.redis_store import mask_url

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("CRISISCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CLUSTER_URL = os.environ.get("CRISISCTL_TEST_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7301")


def require_redis(url: str = REDIS_URL) -> str:
    """`url` if a Redis server answers there; else the test fails saying how to start one."""
    probe = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        probe.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.fail(
            f"Redis does not answer at {mask_url(url)} ({exc}): run `make services` "
            "or set CRISISCTL_TEST_REDIS_URL"
        )
    finally:
        probe.close()
    return url


def _cluster_client(url: str) -> redis.cluster.RedisCluster:
    return redis.cluster.RedisCluster.from_url(
        url.replace("+cluster://", "://", 1), socket_connect_timeout=1.0, socket_timeout=1.0
    )


def require_cluster(url: str = CLUSTER_URL) -> str:
    """`url` once its Redis Cluster answers (started by scripts/ensure-redis-cluster.sh if
    needed); else the test fails saying why."""

    def answers() -> bool:
        try:
            client = _cluster_client(url)
        except (redis.RedisError, OSError):
            return False
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    if answers():
        return url
    script = ROOT / "scripts" / "ensure-redis-cluster.sh"
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or not answers():
        pytest.fail(
            f"no Redis Cluster answers at {url} and {script.name} could not start one "
            f"(exit {run.returncode}): {run.stderr.strip()[-500:]}; run `make services` "
            "or set CRISISCTL_TEST_REDIS_CLUSTER_URL"
        )
    return url


def unique_prefix() -> str:
    """A storage prefix no other test uses."""
    return f"crisisctl-test:{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key holding `prefix` (hash-tagged keys start with '{')."""
    if url.startswith("memory://"):
        return
    client: redis.Redis | redis.cluster.RedisCluster
    if "+cluster://" in url:
        client = _cluster_client(url)
    else:
        client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
            for key in list(client.scan_iter(match=pattern, count=1000)):
                client.delete(key)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A throw-away redis-server process that can be killed and restarted on the same port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make services` (apt redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 5.0
        while True:
            probe = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2)
            try:
                if probe.ping():
                    return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                probe.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
