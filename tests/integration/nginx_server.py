"""Real servers for the validation tests: a bare app under uvicorn, and nginx in front of it.

    with bare_server() as app, nginx_proxy(app.port, tmp_path) as proxy:
        httpx.get(f"{proxy.url}/api/items")     # 429 once the burst allowance is used up

`bare_app` is a Starlette service with no protection at all; `uvicorn_server` serves it (or
any other app) in a uvicorn subprocess on 127.0.0.1 and a free port. `nginx_proxy` writes its
own nginx.conf into a temporary prefix directory (pid file, error log, temp paths all inside
it), runs ``nginx -p DIR -c nginx.conf -e error.log`` in the foreground (``daemon off``, one
process: ``master_process off``) listening on 127.0.0.1:<free port>, and proxies to the app:

- ``/api/…``    ``limit_req`` (a rate limit) answering 429 (``limit_req_status``);
- ``/rate503/…`` the same kind of rate limit (its own zone) answering nginx's default 503, the
  app's path without the prefix (``/rate503/slow`` → ``/slow``);
- ``/conn/…``   ``limit_conn`` (at most `NGINX_CONNECTIONS` requests of a client at once: a
  concurrency limit) answering its default 503, the app's path without the prefix;
- everything else passes unlimited.

Both are killed on exit. The nginx binary comes from Debian's package, which ``make test``
installs (scripts/ensure-system-packages.sh nginx); without it `nginx_binary` raises with what
to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

APP_DIR = Path(__file__).resolve().parent
STARTUP_S = 10.0
#: nginx's limit under /api/: 20 requests/s per client address, 10 more as a burst
NGINX_RATE = "20r/s"
NGINX_BURST = 10
#: nginx's concurrency limit under /conn/: requests of one client address at once
NGINX_CONNECTIONS = 4


# -- the bare app ----------------------------------------------------------------------------
async def root(request: Request) -> Response:
    return PlainTextResponse("ok")


async def items(request: Request) -> Response:
    if request.method == "POST":
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        return JSONResponse({"created": payload}, status_code=201)
    return JSONResponse({"items": [1, 2, 3]})


async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "0.2")))
    return PlainTextResponse("slow")


bare_app = Starlette(
    routes=[
        Route("/", root),
        Route("/health", root),
        Route("/api/items", items, methods=["GET", "POST"]),
        Route("/slow", slow),
    ]
)


# -- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A server subprocess on 127.0.0.1:`port`, its output in a temporary file."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def wait_ready(self, path: str = "/health") -> None:
        deadline = time.monotonic() + STARTUP_S
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}{path}").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer within {STARTUP_S} s")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        self.log.close()


def _spawn(name: str, port: int, args: list[str]) -> Process:
    log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in Process.stop())
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    return Process(name, port, proc, log)


@contextlib.contextmanager
def uvicorn_server(app: str) -> Iterator[Process]:
    """The ASGI `app` ("module:attribute") under uvicorn on 127.0.0.1:<free port>, ready
    (GET /health answers 200), stopped on exit."""
    port = free_port()
    server = _spawn("uvicorn", port, [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(APP_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ])  # fmt: skip
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def bare_server() -> contextlib.AbstractContextManager[Process]:
    """`bare_app` under uvicorn (see `uvicorn_server`)."""
    return uvicorn_server("nginx_server:bare_app")


def nginx_binary() -> str:
    """The nginx executable; RuntimeError saying how to install it when there is none."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(
            "nginx is not installed: run `make test` (it installs it) or "
            "`bash scripts/ensure-system-packages.sh nginx`."
        )
    return found


def nginx_conf(prefix: Path, port: int, upstream_port: int) -> str:
    """A self-contained nginx.conf: everything under `prefix`, loopback only, the limits above."""
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    limit_req_zone $binary_remote_addr zone=per_client:1m rate={NGINX_RATE};
    limit_req_zone $binary_remote_addr zone=per_client_503:1m rate={NGINX_RATE};
    limit_conn_zone $binary_remote_addr zone=at_once:1m;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        location /api/ {{
            limit_req zone=per_client burst={NGINX_BURST} nodelay;
            limit_req_status 429;
            proxy_pass http://app;
        }}
        location /rate503/ {{
            limit_req zone=per_client_503 burst={NGINX_BURST} nodelay;
            proxy_pass http://app/;
        }}
        location /conn/ {{
            limit_conn at_once {NGINX_CONNECTIONS};
            proxy_pass http://app/;
        }}
        location / {{
            proxy_pass http://app;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_proxy(upstream_port: int, prefix: Path) -> Iterator[Process]:
    """nginx on 127.0.0.1:<free port> in front of 127.0.0.1:`upstream_port`, stopped on exit."""
    binary = nginx_binary()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, port, upstream_port))
    server = _spawn(
        "nginx", port, [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
