"""Real Prometheus and Alertmanager processes (Debian's) on loopback, for the end-to-end tests.

    with prometheus(config_yaml, tmp) as prom, alertmanager(config_yaml, tmp) as am:
        prom.query("up")

Each gets a free 127.0.0.1 port, its own configuration and storage folder under `tmp`, and is
waited for (``/-/ready``) for at most `STARTUP_S`; it is terminated on exit. Alertmanager runs
without clustering (``--cluster.listen-address=``). A missing binary fails the test with what
to run (`make services` installs them through scripts/ensure-system-packages.sh).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from guard_servers import free_port

STARTUP_S = 20.0


def binary(name: str) -> str:
    """The path of `name`, or the test fails saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make services` (scripts/ensure-system-packages.sh "
            "prometheus prometheus-alertmanager).",
            pytrace=False,
        )
    return path


@dataclass
class Process:
    """A started server: its URL and output."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def get(self, path: str, **params: Any) -> Any:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            answer = client.get(f"{self.url}{path}", params=params)
            answer.raise_for_status()
            return (
                answer.json() if "json" in answer.headers.get("content-type", "") else answer.text
            )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Prometheus: the instant vector of `promql` now."""
        data = self.get("/api/v1/query", query=promql)
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples on the server's own /metrics page (0 when absent)."""
        total = 0.0
        for line in str(self.get("/metrics")).splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.contextmanager
def _run(name: str, args: list[str], port: int, folder: Path) -> Iterator[Process]:
    log = (folder / f"{name}.log").open("w+b")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Process(name, f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + STARTUP_S
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{server.url}/-/ready").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready in {STARTUP_S} s:\n{server.output()}")
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


@contextlib.contextmanager
def prometheus(config: str, folder: Path) -> Iterator[Process]:
    """Prometheus with `config` (YAML text), evaluating and resending alerts every second."""
    path = folder / "prometheus.yml"
    path.write_text(config)
    port = free_port()
    args = [
        binary("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={folder / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}/",
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ]
    with _run("prometheus", args, port, folder) as server:
        yield server


@contextlib.contextmanager
def alertmanager(config: str, folder: Path, port: int | None = None) -> Iterator[Process]:
    """Alertmanager with `config` (YAML text), clustering off."""
    path = folder / "alertmanager.yml"
    path.write_text(config)
    port = port or free_port()
    args = [
        binary("prometheus-alertmanager"),
        f"--config.file={path}",
        f"--storage.path={folder / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    with _run("alertmanager", args, port, folder) as server:
        yield server
