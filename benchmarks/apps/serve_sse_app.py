"""The server side of benchmarks/serve_sse.py: the serve app with a fixed-rate publisher.

    python benchmarks/apps/serve_sse_app.py PORT STATE_DIR RATE PAD

Runs `crisisctl.server.app.create_app` (no watch file; one operator token from
$SERVE_BENCH_TOKEN) under uvicorn on 127.0.0.1:PORT, and publishes RATE events per second
through the app's own event hub, each ``{"t": time.time(), "pad": "x" * PAD}`` (PAD ≈ a fleet
event's size), so the clients can measure publish → receive. SIGTERM ends the streams and the
process. The fd limit is raised to its hard limit (1,000 streams need 1,000 sockets).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import uvicorn

from crisisctl.server.app import create_app
from crisisctl.server.runtime import ServeRuntime
from crisisctl.server.settings import ServeConfig, ServeSettings


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def main(port: int, state_dir: Path, rate: float, pad: int) -> None:
    config = ServeConfig.model_validate(
        {
            "listen": f"127.0.0.1:{port}",
            "state_dir": str(state_dir),
            "db": f"sqlite:///{state_dir / 'incidents.db'}",
            "tokens": [{"name": "bench", "token": "env:SERVE_BENCH_TOKEN", "role": "operator"}],
            "events": {"buffer": 1000, "client_queue": 512, "ping": 15},
        }
    )
    settings = ServeSettings.build(config)
    runtime = ServeRuntime(settings)
    app = create_app(settings, runtime=runtime)
    loop = asyncio.get_running_loop()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.should_exit = True
            loop.call_soon_threadsafe(runtime.hub.close)

    server = Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            backlog=4096, timeout_graceful_shutdown=2,
        )
    )  # fmt: skip

    async def publish() -> None:
        while not server.started:  # noqa: ASYNC110 (uvicorn's flag: there is no event to await)
            await asyncio.sleep(0.05)
        period = 1.0 / rate
        due = loop.time()
        padding = "x" * pad
        while not server.should_exit:
            runtime.hub.publish("bench", {"t": time.time(), "pad": padding})
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))

    publisher = asyncio.create_task(publish())
    await server.serve()
    publisher.cancel()


if __name__ == "__main__":
    raise_fd_limit()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("SERVE_BENCH_TOKEN", "serve-bench-token-0123456789")
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
