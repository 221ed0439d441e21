"""Run the lab's scanning service in its own uvicorn process on 127.0.0.1, and stop it.

The service gets a process of its own (as a real one would), so triage finds it by its
listening port and reads its CPU and RSS. `ServiceProcess.start()` waits until ``GET /health``
answers; `stop()` terminates it (then kills it after a grace period). Its output goes to a
log file so a failed start can say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from crisisctl.lab.scanstore import Mode

HOST = "127.0.0.1"
APP = "crisisctl.lab.scanner:create_app"


class LabError(RuntimeError):
    """The lab could not run (the service did not start, …); the message is one sentence."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """One uvicorn process serving the scanning service in `mode` on 127.0.0.1:`port`."""

    def __init__(
        self,
        mode: Mode,
        port: int,
        *,
        settings: dict[str, Any] | None = None,
        token: str = "",
        log_path: Path | None = None,
    ) -> None:
        self.mode: Mode = mode
        self.port = port
        self.settings = dict(settings or {})
        self.token = token
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The service's base URL."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The uvicorn process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISCTL_LAB")}
        env.update(
            CRISISCTL_LAB_MODE=self.mode,
            CRISISCTL_LAB_SETTINGS=json.dumps(self.settings),
            PYTHONUNBUFFERED="1",
        )
        if self.token:
            env["CRISISCTL_GUARD_TOKEN"] = self.token
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "uvicorn", APP, "--factory", "--host", HOST,
                   "--port", str(self.port), "--log-level", "warning", "--no-access-log",
                   "--no-proxy-headers"]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
        )

    def _tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1][-300:] if lines else ""

    async def start(self, timeout_s: float = 20.0) -> None:
        """Start the process and wait until ``GET /health`` answers 200 (LabError if not)."""
        await asyncio.to_thread(self._spawn)
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = await asyncio.to_thread(self._tail)
                    await asyncio.to_thread(self.stop)
                    raise LabError(
                        f"the {self.mode} scanning service exited at start "
                        f"(code {self.proc.returncode}){': ' + tail if tail else ''}."
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        await asyncio.to_thread(self.stop)
        raise LabError(
            f"the {self.mode} scanning service did not answer on {self.url} within "
            f"{timeout_s:g} s; see {self.log_path or 'its output'}."
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """Terminate the process (kill it after `grace_s`); safe to call twice."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None
