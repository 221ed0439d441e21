"""Real uvicorn servers running guard_apps.py in subprocesses, on 127.0.0.1 only.

    with guard_servers({"rate_limit": "5/minute"}, {"token": "t"}) as (a, b):
        httpx.get(f"{a.url}/ok")

Each server gets a free port, its GuardConfig as JSON in the environment, and is waited for
(GET /_crisis/health answers 200) for at most `STARTUP_S`; all are killed on exit. uvicorn's own
X-Forwarded-For handling is switched off (--no-proxy-headers) so that the guard alone decides
whom to believe.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

APP_DIR = Path(__file__).resolve().parent
STARTUP_S = 10.0
#: paths the tests read app state through: never shed, queued or limited by the guard
TEST_CRITICAL_PATHS = ["/health", "/state", "/toggle"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GuardServer:
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    #: more uvicorn options, e.g. ["--http", "h11"]
    args: list[str] = field(default_factory=list)
    #: uvicorn --workers (processes sharing the port)
    workers: int = 1
    #: the ASGI app uvicorn serves (a module of this folder)
    app: str = "guard_apps:app"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = dict(self.config)
        config.setdefault("critical_paths", TEST_CRITICAL_PATHS)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISCTL_GUARD")}
        env.update(self.env)
        env["CRISISCTL_TEST_GUARD"] = json.dumps(config)
        env["PYTHONUNBUFFERED"] = "1"
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--app-dir", str(APP_DIR),
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--no-proxy-headers", "--no-access-log", "--workers", str(self.workers),
             *self.args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"uvicorn exited with {self.proc.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/_crisis/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"uvicorn did not answer within {STARTUP_S} s:\n{self.output()}"
                    )
                time.sleep(0.05)

    def output(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        if self.log is not None:
            self.log.close()
            self.log = None


@contextlib.contextmanager
def guard_servers(
    *configs: dict[str, Any], env: dict[str, str] | None = None, args: list[str] | None = None
) -> Iterator[list[GuardServer]]:
    """Start one server per config (in parallel), yield them ready, stop them all."""
    servers = [GuardServer(config, dict(env or {}), list(args or [])) for config in configs]
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + STARTUP_S
        for server in servers:
            server.wait_ready(deadline)
        yield servers
    finally:
        for server in servers:
            server.stop()
