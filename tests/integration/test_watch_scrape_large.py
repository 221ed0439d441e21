"""A large Prometheus exposition is parsed off the event loop (crisisctl.watch.scrape).

A real HTTP server on loopback (a thread) serves an exposition of tens of thousands of
samples; while `Scraper.scrape` reads it in a fresh process (this file run as a script), a
coroutine ticks every 5 ms and records its longest gap. Parsing that body in place takes
twice the bound the gap must stay under, so the test fails if the parse runs on the loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crisisctl.watch.config import parse_watch_text
from crisisctl.watch.scrape import PARSE_IN_THREAD_BYTES, Instance, Scraper, prometheus_samples

SAMPLES = 20_000


def _exposition() -> bytes:
    lines = ["# HELP big_requests_total Requests.", "# TYPE big_requests_total counter"]
    lines += [
        f'big_requests_total{{route="/r{i}",method="GET",code="200"}} {i * 3.5}'
        for i in range(SAMPLES)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def big_endpoint() -> Iterator[tuple[str, bytes]]:
    body = _exposition()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", body
    finally:
        server.shutdown()
        server.server_close()


async def _measure(url: str) -> dict[str, Any]:
    """In a fresh process (see below): the in-place parse time, then the loop's longest gap
    while `Scraper.scrape` reads and parses the same body."""
    inst = Instance("metrics", "big", url, "127.0.0.1")
    text = _exposition().decode()  # the body the server sends
    started = time.perf_counter()
    parsed = len(prometheus_samples(text, inst))
    in_place = time.perf_counter() - started
    config = parse_watch_text(
        f'services:\n  big:\n    metrics: ["{url}"]\n    timeout: 30s\n', "w.yaml"
    )
    scraper = Scraper(config)
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        samples = await scraper.scrape()
    finally:
        done.set()
        await ticker
    return {
        "parsed": parsed,
        "in_place": in_place,
        "max_gap": max(gaps),
        "scraped": sum(1 for k, _ in samples if k.name == "big_requests_total"),
    }


def test_a_large_exposition_does_not_stall_the_loop(big_endpoint: tuple[str, bytes]) -> None:
    url, body = big_endpoint
    assert len(body) > PARSE_IN_THREAD_BYTES
    # measured in a fresh process, as `crisisctl watch` runs: inside the test process, after a
    # thousand tests, other tests' leftovers (threads, a large heap) share the GIL with the
    # parsing thread (CI saw the loop wait 0.41 s of a 0.42 s parse twice, never alone)
    child = subprocess.run(
        [sys.executable, __file__, url], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr[-2000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got["parsed"] == got["scraped"] == SAMPLES
    # half the in-place parse: a parse on the loop stalls it for all of it; off the loop, the
    # parsing thread still holds the GIL in turns, and on a busy 2-core host the loop's thread
    # can wait a few of them (a quarter was too tight there: 0.23 s of 0.61 s)
    in_place = got["in_place"]
    bound = max(0.1, in_place / 2)
    assert in_place > 1.5 * bound  # else the test could not tell a stall from a scheduling gap
    print(
        f"parse in place {in_place * 1000:.0f} ms; longest loop gap {got['max_gap'] * 1000:.0f} ms"
    )
    assert got["max_gap"] < bound, got


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(sys.argv[1]))))
