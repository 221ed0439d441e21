"""Helpers of the serve tests: a real `crisisctl serve` process on loopback and an SSE reader.

`ServeProcess` writes a serve file (two tokens: an operator and a viewer), starts
``python -m crisisctl.cli.main serve`` on a free port and waits until ``/api/me`` answers;
`stop` sends SIGTERM and returns how long the process took to exit. `read_events` reads
``/api/events`` for a bounded time and returns the parsed events. (This module holds no tests.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from guard_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TOKEN = "serve-operator-token-0123456789"
VIEWER_TOKEN = "serve-viewer-token-0123456789"
STARTUP_S = 20.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ServeProcess:
    """One `crisisctl serve` subprocess and its files (all under `directory`)."""

    directory: Path
    watch_yaml: str | None = None
    extra_yaml: str = ""
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.directory / 'incidents.db'}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"state_dir: {self.directory / 'state'}",
            f"db: {self.db_url}",
            "tokens:",
            "  - {name: alice, token: env:SERVE_TEST_OPERATOR, role: operator}",
            "  - {name: victor, token: env:SERVE_TEST_VIEWER, role: viewer}",
        ]
        if self.watch_yaml is not None:
            (self.directory / "watch.yaml").write_text(self.watch_yaml)
            lines.append("watch: watch.yaml")
        path = self.directory / "serve.yaml"
        path.write_text("\n".join(lines) + "\n" + self.extra_yaml)
        env = {k: v for k, v in os.environ.items() if k != "CRISISCTL_DB"}
        env.update(self.env)
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            SERVE_TEST_OPERATOR=OPERATOR_TOKEN,
            SERVE_TEST_VIEWER=VIEWER_TOKEN,
            PYTHONUNBUFFERED="1",
        )
        log = (self.directory / "serve.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crisisctl.cli.main", "serve", str(path)],
                env=env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + STARTUP_S
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    answer = client.get(f"{self.url}/api/me", headers=bearer(OPERATOR_TOKEN))
                    if answer.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not answer within {STARTUP_S} s:\n{self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        path = self.directory / "serve.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self) -> float:
        """SIGTERM; the seconds until the process exited (it is killed after 15 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        return time.monotonic() - started


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events (``id``, ``type``, ``data``) and comments (type ``:``) of an SSE text."""
    out: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append({"type": ":", "text": line[1:].strip()})
            elif line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("event: "):
                event["type"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
        if "type" in event:
            out.append(event)
    return out


def read_events(
    url: str, headers: dict[str, str], *, seconds: float, until: int | None = None
) -> list[dict[str, Any]]:
    """Read the SSE stream for at most `seconds` (or until `until` events arrived)."""
    text = ""
    deadline = time.monotonic() + seconds
    with (
        httpx.Client(trust_env=False, timeout=httpx.Timeout(seconds, connect=5.0)) as client,
        client.stream("GET", f"{url}/api/events", headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        with contextlib.suppress(httpx.ReadTimeout):
            for chunk in response.iter_text():
                text += chunk
                events = [e for e in parse_sse(text) if e["type"] != ":"]
                if until is not None and len(events) >= until:
                    break
                if time.monotonic() > deadline:
                    break
    return parse_sse(text)
