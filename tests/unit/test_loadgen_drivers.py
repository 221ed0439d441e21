"""The benchmark's Python generators keep their contract: one JSON line the benchmark can read.

Each generator of `benchmarks/apps/loadgen_clients.py` runs for half a second in its own
process against a keep-alive HTTP/1.1 server on 127.0.0.1 (a thread of this test), and its
line must parse with `parse_json_out` and count what the server saw. The generated Locust
file must at least compile (running Locust takes seconds; the benchmark's --quick run does).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.apps.loadgen_clients import LOCUSTFILE  # noqa: E402
from benchmarks.apps.loadgen_tools import parse_json_out  # noqa: E402


class HelloServer:
    """Answers every request with ``hello``, keep-alive; counts the requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.requests = 0
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> HelloServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def hello() -> Iterator[HelloServer]:
    with HelloServer() as server:
        yield server


def run_driver(name: str, port: int, *extra: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.apps.loadgen_clients", name,
         "--url", f"http://127.0.0.1:{port}/", "--connections", "4", "--duration", "0.5", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return parse_json_out(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("name", "extra"),
    [("crisisctl", ()), ("crisisctl", ("--think", "0.01")), ("crisisctl_open", ("--rate", "200"))],
)
def test_our_generators_report_what_the_server_saw(
    hello: HelloServer, name: str, extra: tuple[str, ...]
) -> None:
    before = hello.requests
    out = run_driver(name, hello.port, *extra)
    assert out["errors"] == 0
    assert isinstance(out["requests"], int) and out["requests"] > 0
    assert hello.requests - before == out["requests"]
    assert out["connects"] == 4
    assert float(out["cpu_s"]) > 0 and 0.4 < float(out["wall_s"]) < 5  # type: ignore[arg-type]
    assert out["p50_ms"] is not None and out["p99_ms"] is not None
    if name == "crisisctl_open":
        assert abs(out["requests"] - 100) <= 2  # 200 req/s for 0.5 s
        assert "corrected_p99_ms" in out
    if extra[:1] == ("--think",):
        # each user pauses 10 ms (libuv's millisecond timers may fire up to 1 ms early);
        # with no pause the same run sends thousands
        assert out["requests"] <= 4 * (0.5 / 0.009) + 4


def test_aiohttp_generator(hello: HelloServer) -> None:
    before = hello.requests
    out = run_driver("aiohttp", hello.port)
    assert out["errors"] == 0 and out["requests"] == hello.requests - before > 0


def test_non_loopback_urls_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.apps.loadgen_clients", "crisisctl",
         "--url", "http://10.1.2.3/"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)])),
    )  # fmt: skip
    assert proc.returncode == 2 and "loopback" in proc.stderr


def test_the_locustfile_compiles() -> None:
    source = LOCUSTFILE.format(think_s=0.0)
    compile(source, "locustfile.py", "exec")
    assert "FastHttpUser" in source and "LOADGEN_LOCUST_OUT" in source
