"""Distributed load across three hosts made with ``ip netns``: a coordinator, two workers.

The set-up creates four network namespaces of its own — a switch (a bridge) and three hosts
on a private 10.x/24 subnet it picks — and removes them after. Host A runs the target (a
uvicorn app counting requests, `count_app`), a password-protected redis-server bound to its
own address, and the coordinator; hosts B and C each run ``crisisctl load-worker``. No traffic
leaves the namespaces (network rule).
Skipped, with the reason, only where ``ip netns add`` fails (no privilege).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
PASSWORD = "s3cret-dist-pw"
REDIS_PORT = 6390
APP_PORT = 8080


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Lan:
    """Three hosts (a, b, c) on one bridge; each host's address, and the processes started."""

    tag: str
    addresses: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"ccd{self.tag}{host}"

    def start(self, host: str, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "NO_COLOR": "1"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *argv],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HERE,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def python(self, host: str, code: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), sys.executable, "-c", code],
            check=True, capture_output=True, text=True, timeout=20,
        ).stdout.strip()  # fmt: skip

    def get(self, path: str) -> str:
        url = f"http://{self.addresses['a']}:{APP_PORT}{path}"
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
        return self.python("a", code)

    @property
    def redis_url(self) -> str:
        return f"redis://:{PASSWORD}@{self.addresses['a']}:{REDIS_PORT}/0"


def _wait_for(lan: Lan, check: str, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            lan.python("a", check)
            return
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    raise AssertionError(f"{what} did not come up in {timeout_s:g} s")


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    if shutil.which("ip") is None or shutil.which("redis-server") is None:
        pytest.fail("this test needs `ip` (iproute2) and `redis-server` installed")
    tag = f"{os.getpid() % 100000}"
    net = f"10.{random.randrange(200, 250)}.{random.randrange(0, 256)}"
    lan = Lan(tag, {h: f"{net}.{i + 1}" for i, h in enumerate("abc")})
    made: list[str] = []
    try:
        try:
            _ip("netns", "add", lan.ns("s"))
        except (subprocess.CalledProcessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            pytest.skip(f"network namespaces cannot be created here: {detail.decode().strip()}")
        made.append(lan.ns("s"))
        _ip("-n", lan.ns("s"), "link", "add", "br0", "type", "bridge")
        _ip("-n", lan.ns("s"), "link", "set", "br0", "up")
        for host, address in lan.addresses.items():
            ns = lan.ns(host)
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", lan.ns("s"), "link", "add", f"to{host}", "type", "veth", "peer", "name",
                "eth0", "netns", ns)  # fmt: skip
            _ip("-n", lan.ns("s"), "link", "set", f"to{host}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        logs = tmp_path_factory.mktemp("lan")
        a = lan.addresses["a"]
        lan.start(
            "a", "redis-server", "--bind", a, "--port", str(REDIS_PORT), "--save", "",
            "--appendonly", "no", "--requirepass", PASSWORD, log=logs / "redis.log",
        )  # fmt: skip
        lan.start(
            "a", str(BIN / "python"), "-m", "uvicorn", "count_app:app", "--host", a, "--port",
            str(APP_PORT), "--log-level", "warning", log=logs / "app.log",
        )  # fmt: skip
        _wait_for(lan, f"import socket; socket.create_connection(({a!r}, {REDIS_PORT}), 1)",
                  "redis-server")  # fmt: skip
        _wait_for(lan, f"import socket; socket.create_connection(({a!r}, {APP_PORT}), 1)",
                  "the target app")  # fmt: skip
        yield lan
    finally:
        for proc in lan.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _workers(lan: Lan, logs: Path) -> list[subprocess.Popen[bytes]]:
    argv = [str(BIN / "crisisctl"), "load-worker", lan.redis_url, "--wait", "60s"]
    return [lan.start(h, *argv, log=logs / f"worker-{h}.log") for h in "bc"]


def _coordinate(lan: Lan, logs: Path, rate: int, duration_s: int) -> subprocess.Popen[bytes]:
    return lan.start(
        "a", str(BIN / "crisisctl"), "load", f"http://{lan.addresses['a']}:{APP_PORT}/",
        "--rate", str(rate), "--duration", f"{duration_s}s", "--connections", "8",
        "--coordinator", lan.redis_url, "--workers", "2", "--workers-timeout", "40s",
        "--out", str(logs / "report.json"), log=logs / "coordinator.log",
    )  # fmt: skip


def _no_secret(logs: Path) -> None:
    for path in logs.iterdir():
        assert PASSWORD not in path.read_text(errors="replace"), path.name


def test_two_hosts_send_exact_shares_and_merge(lan: Lan, tmp_path: Path) -> None:
    lan.get("/reset")
    workers = _workers(lan, tmp_path)
    coordinator = _coordinate(lan, tmp_path, rate=100, duration_s=3)
    assert coordinator.wait(60) == 0, (tmp_path / "coordinator.log").read_text()
    for worker in workers:
        assert worker.wait(20) == 0  # one run, then exit
    report = json.loads((tmp_path / "report.json").read_text())
    counted = int(lan.get("/count"))
    dist = report["distributed"]
    sent = [w["sent_requests"] for w in dist["workers"]]
    # the rate is exact: 100 req/s × 3 s, split 150 + 150, interleaved
    assert abs(report["requests"] - 300) <= 1
    assert report["requests"] == sum(sent) == counted == report["completed"]
    assert sorted(sent) == [150, 150]
    assert len({w["worker"] for w in dist["workers"]}) == 2
    assert dist["lost"] == [] and report["processes"] == 2
    assert sum(p["requests"] for p in report["per_second"]) == report["requests"]
    assert all(w["clock_uncertainty_ms"] < 50 for w in dist["workers"])
    assert "***" in dist["coordinator"]
    _no_secret(tmp_path)


def test_a_killed_worker_is_reported_with_its_unsent_share(lan: Lan, tmp_path: Path) -> None:
    lan.get("/reset")
    workers = _workers(lan, tmp_path)
    coordinator = _coordinate(lan, tmp_path, rate=100, duration_s=5)
    log = tmp_path / "worker-c.log"
    deadline = time.monotonic() + 40
    while "worker 2 of 2" not in log.read_text() and "worker 1 of 2" not in log.read_text():
        assert time.monotonic() < deadline, "worker c never got its share"
        time.sleep(0.1)
    time.sleep(2.5)  # logged in, started, about a second and a half sent
    workers[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert coordinator.wait(30) == 1, (tmp_path / "coordinator.log").read_text()
    # the run ends on time: the rest of the 5 s schedule plus the drain, not a hang
    assert time.monotonic() - killed_at < 8
    assert workers[0].wait(20) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    counted = int(lan.get("/count"))
    (lost,) = report["distributed"]["lost"]
    assert lost["reason"] == "its heartbeat expired" and lost["planned_arrivals"] == 250
    assert 0 < lost["unsent_arrivals"] < 250
    assert lost["sent_requests"] + lost["unsent_arrivals"] == 250
    # the survivor's share is whole and exact; the target saw it plus what the lost one sent
    assert report["requests"] == 250 and report["processes"] == 1
    assert report["requests"] + lost["sent_requests"] <= counted <= 500
    text = (tmp_path / "coordinator.log").read_text()
    assert "lost mid-run" in text and "lost worker:" in text and "Traceback" not in text
    _no_secret(tmp_path)
