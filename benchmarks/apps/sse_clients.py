"""The client side of benchmarks/serve_sse.py: N concurrent SSE streams on raw asyncio sockets.

    python benchmarks/apps/sse_clients.py URL TOKEN N SECONDS

Opens N connections to ``URL/api/events`` (bearer TOKEN), prints ``connected N`` once every
stream has its 200 answer, then for SECONDS records, for every ``bench`` event received, the
latency receive time − the event's ``t`` (the publisher's time.time(); same host, same clock),
and prints one JSON line: latency percentiles (ms), events received, streams that failed or
ended early. Bounded: every stream is closed after SECONDS (+ a 30 s connect allowance).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import uvloop


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


async def stream(
    host: str,
    port: int,
    token: str,
    connected: asyncio.Event,
    ready: list[int],
    measure: asyncio.Event,
    stop: asyncio.Event,
    latencies: list[float],
    failures: list[str],
    total: int,
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        failures.append(f"connect: {exc}")
        ready[0] += 1
        if ready[0] >= total:
            connected.set()
        return
    try:
        writer.write(
            f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}"
            "\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            failures.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        ready[0] += 1
        if ready[0] >= total:
            connected.set()
        buffer = b""
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                if not stop.is_set():
                    failures.append("ended early")
                return
            now = time.time()
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            if not measure.is_set():
                continue
            for block in blocks:
                start = block.find(b"data: ")
                if start < 0 or b"event: bench" not in block:
                    continue
                data = json.loads(block[start + 6 :].split(b"\n", 1)[0])
                latencies.append((now - float(data["t"])) * 1000.0)
    except (OSError, asyncio.IncompleteReadError) as exc:
        failures.append(f"{exc.__class__.__name__}")
    finally:
        writer.close()


async def main(url: str, token: str, count: int, seconds: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connected, measure, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    ready = [0]
    latencies: list[float] = []
    failures: list[str] = []
    started = time.monotonic()
    tasks = []
    for _ in range(count):
        tasks.append(
            asyncio.create_task(
                stream(host, port, token, connected, ready, measure, stop, latencies, failures,
                       count)
            )
        )  # fmt: skip
        await asyncio.sleep(0)  # spread the connects a little (the listen backlog)
    with contextlib.suppress(TimeoutError):  # those not connected are counted as failures
        await asyncio.wait_for(connected.wait(), 30.0)
    connect_s = time.monotonic() - started
    print(f"connected {ready[0] - len(failures)}", flush=True)
    await asyncio.sleep(1.0)  # settle
    measure.set()
    await asyncio.sleep(seconds)
    measure.clear()
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": count,
        "connected": ready[0] - len([f for f in failures if f.startswith("connect")]),
        "connect_s": round(connect_s, 3),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures))[:5],
        "events_received": len(latencies),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else None,
            "mean": statistics.fmean(latencies) if latencies else None,
        },
    }


if __name__ == "__main__":
    raise_fd_limit()
    result = uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    print(json.dumps(result), flush=True)
