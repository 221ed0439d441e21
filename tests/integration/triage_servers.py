"""Servers with known behaviour for the triage tests, all on 127.0.0.1.

* `sick_server()` — uvicorn (subprocess) serving `create_app()`: ``/health`` and one route per
  behaviour: ``/ok`` (20 ms), ``/x2`` ``/x5`` ``/x20`` (2, 5, 20 × the 100 ms `BASE_MS`),
  ``/err15`` and ``/err60`` (exactly 3 resp. 12 of every 20 requests answer 500), and
  ``/tunable`` (a median of `TUNABLE_MS`, 20 ms, varying from request to request as a real
  service's work does: times a log-normal factor of σ `TUNABLE_SIGMA`; ``POST
  /_test/delay?ms=N&sigma=S`` changes both: the same operation turning slow). With
  ``guard={...}`` the app is wrapped in the crisisctl guard configured with those fields.
* `raw_server(kind)` — a raw asyncio server in a thread: "hang" (reads the request, never
  answers), "reset" (half a response, then a TCP reset), "garbage" (bytes that are not HTTP).
* `refused_port()` — a loopback port nothing listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

APP_DIR = Path(__file__).resolve().parent
BASE_MS = 100.0
TUNABLE_MS = 20.0
TUNABLE_SIGMA = 0.3
STARTUP_S = 15.0
#: route -> (delay in ms, how many of every 20 requests fail with 500)
BEHAVIOURS: dict[str, tuple[float, int]] = {
    "/ok": (20.0, 0),
    "/x2": (2 * BASE_MS, 0),
    "/x5": (5 * BASE_MS, 0),
    "/x20": (20 * BASE_MS, 0),
    "/err15": (5.0, 3),
    "/err60": (5.0, 12),
}


def create_app() -> Any:
    """The sick service (uvicorn --factory); guarded when CRISISCTL_TEST_TRIAGE_GUARD is set."""
    counters: dict[str, int] = {}

    def handler(path: str, delay_ms: float, failing: int) -> Any:
        async def endpoint(request: Request) -> Response:
            n = counters.get(path, 0)
            counters[path] = n + 1
            await asyncio.sleep(delay_ms / 1000)
            if n % 20 < failing:
                return PlainTextResponse("boom", status_code=500)
            return PlainTextResponse("ok")

        return endpoint

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    tunable = {"ms": TUNABLE_MS, "sigma": TUNABLE_SIGMA}

    async def tunable_work(request: Request) -> Response:
        await asyncio.sleep(tunable["ms"] * random.lognormvariate(0.0, tunable["sigma"]) / 1000)
        return PlainTextResponse("ok")

    async def set_delay(request: Request) -> Response:
        tunable["ms"] = float(request.query_params["ms"])
        tunable["sigma"] = float(request.query_params.get("sigma", TUNABLE_SIGMA))
        return PlainTextResponse("ok")

    routes = [
        Route("/health", health),
        Route("/tunable", tunable_work),
        Route("/_test/delay", set_delay, methods=["POST"]),
    ]
    routes += [
        Route(p, handler(p, d, f), methods=["GET", "POST"]) for p, (d, f) in BEHAVIOURS.items()
    ]
    app: Any = Starlette(routes=routes)
    guard = os.environ.get("CRISISCTL_TEST_TRIAGE_GUARD")
    if guard:
        from crisisctl.guard import Guard, GuardConfig

        app = Guard(app, GuardConfig.from_dict(json.loads(guard)))
    return app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    return free_port()


@contextlib.contextmanager
def sick_server(guard: dict[str, Any] | None = None) -> Iterator[str]:
    """Run `create_app()` under uvicorn on a free port; yield its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRISISCTL_GUARD")}
    env["PYTHONUNBUFFERED"] = "1"
    if guard is not None:
        env["CRISISCTL_TEST_TRIAGE_GUARD"] = json.dumps(guard)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "triage_servers:create_app",
                "--factory",
                "--app-dir",
                str(APP_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(proc, f"{url}/health", log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Any) -> None:
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log.read()!r}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"uvicorn did not answer within {STARTUP_S} s:\n{log.read()!r}")
            time.sleep(0.05)


async def _read_head(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        await reader.readuntil(b"\r\n\r\n")


def _handler(kind: str, tasks: set[asyncio.Task[Any]]) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _read_head(reader)
            if kind == "hang":
                await asyncio.Event().wait()  # until the server is stopped
            elif kind == "reset":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial body")
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == "garbage":
                writer.write(b"\x00\x01SSH-2.0-not-http\r\n\xff\xfe garbage garbage\r\n\r\n")
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    return handle


@contextlib.contextmanager
def raw_server(kind: str) -> Iterator[str]:
    """A misbehaving server ("hang", "reset" or "garbage") in a thread; yield its base URL."""
    if kind not in ("hang", "reset", "garbage"):
        raise ValueError(kind)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    tasks: set[asyncio.Task[Any]] = set()
    stop = asyncio.Event()

    async def main() -> None:
        server = await asyncio.start_server(_handler(kind, tasks), "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await stop.wait()
            server.close()
            pending = list(tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10.0):
        raise RuntimeError("the raw server did not start")
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10.0)
        loop.close()
