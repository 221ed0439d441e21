"""The guard demo: a fixed-capacity service with the guard, driven past its capacity on loopback.

Starts `crisisctl.lab.sample_app:guarded_app` under uvicorn on 127.0.0.1, measures its unloaded
latency, then for `duration_s` seconds offers 3× its capacity on `/api/work` (open loop), bursts
a rate-limited `POST /api/scans`, reads a low-priority `/api/report`, and switches the guard to
`emergency` and then `recovering` through its control endpoint — while polling
`/_crisis/status`. Everything is bounded in time and stops by itself; nothing here prints:
progress goes to the `on_event` callback and the result is returned (and written as JSON).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from crisisctl.lab.openloop import OpenLoopResult, run_open_loop

EventSink = Callable[[str, dict[str, Any]], None]
TOKEN = "crisis-demo-token"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DemoError(RuntimeError):
    """The demo could not run (the sample service did not start, …)."""


async def start_server(
    app: str, port: int, env: dict[str, str], timeout_s: float = 20.0
) -> subprocess.Popen[bytes]:
    """Start uvicorn serving `app` on 127.0.0.1:`port` and wait until it answers."""
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.Popen,
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise DemoError(f"the sample service exited at start: {err.strip()[-500:]}")
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"http://127.0.0.1:{port}/health")
                if response.status_code == 200:
                    return proc
            await asyncio.sleep(0.1)
    stop_server(proc)
    raise DemoError(f"the sample service did not answer on 127.0.0.1:{port} within {timeout_s:g} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server started by `start_server` (terminate, then kill)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _summary(result: OpenLoopResult) -> dict[str, Any]:
    ok = result.latency_by_class.get("2xx")
    return {
        "offered_rps": round(result.rate, 1),
        "sent": result.sent,
        "status_counts": {str(k): v for k, v in sorted(result.status_counts.items())},
        "errors": {k: v for k, v in result.errors.items() if v},
        "ok": result.ok,
        "ok_rps": round(result.ok / result.duration_s, 1) if result.duration_s else 0.0,
        "admitted_latency_ms": ok.summary().as_dict() if ok is not None else None,
        "latency_ms": result.latency.summary().as_dict(),
    }


async def run_guard_demo(
    *,
    duration_s: float = 15.0,
    out_dir: Path | None = Path("crisis-demo"),
    on_event: EventSink | None = None,
    work_ms: float = 10.0,
) -> dict[str, Any]:
    """Run the demo; returns (and writes to out_dir/guard-demo.json) what the guard did."""
    emit: EventSink = on_event or (lambda kind, data: None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"CRISISCTL_GUARD_TOKEN": TOKEN, "CRISISCTL_LAB_WORK_MS": str(work_ms)}
    emit("phase", {"message": f"starting the sample service with the guard on {base}"})
    proc = await start_server("crisisctl.lab.sample_app:guarded_app", port, env)
    try:
        emit("phase", {"message": "measuring unloaded latency (20 req/s for 3 s)"})
        unloaded = await run_open_loop(f"{base}/api/work", rate=20, duration_s=3.0, connections=8)
        p50 = unloaded.latency.summary().p50_ms
        p99 = unloaded.latency.summary().p99_ms
        capacity = 1000.0 / max(p50, work_ms * 0.5)
        offered = round(3 * capacity)
        emit(
            "baseline",
            {
                "p50_ms": p50,
                "p99_ms": p99,
                "capacity_rps": round(capacity, 1),
                "offered_rps": offered,
            },
        )
        emit("phase", {"message": f"offering {offered} req/s (3x capacity) for {duration_s:g} s"})
        statuses: list[dict[str, Any]] = []
        switches: list[dict[str, Any]] = []

        async def poll_status(client: httpx.AsyncClient) -> None:
            start = time.monotonic()
            while time.monotonic() - start < duration_s + 1.0:
                await asyncio.sleep(1.0)
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    status = (await client.get(f"{base}/_crisis/status")).json()
                    point = {
                        "t_s": round(time.monotonic() - start, 1),
                        "mode": status["mode"]["mode"],
                        "limit": status["concurrency"].get("limit"),
                        "in_flight": status["in_flight"],
                        "queued": status["concurrency"].get("queued"),
                        "shed": status["shed"],
                        "p99_ms": status["latency_ms"]["p99"],
                    }
                    statuses.append(point)
                    emit("status", point)

        async def switch(client: httpx.AsyncClient, at_s: float, mode: str, reason: str) -> None:
            await asyncio.sleep(at_s)
            response = await client.post(
                f"{base}/_crisis/mode",
                json={"mode": mode, "reason": reason, "actor": "crisisctl demo"},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            entry = {"at_s": at_s, "mode": mode, "http_status": response.status_code}
            switches.append(entry)
            emit("mode", entry)

        async with httpx.AsyncClient(timeout=5.0) as client:
            work, scans, report, *_ = await asyncio.gather(
                run_open_loop(f"{base}/api/work", rate=offered, duration_s=duration_s,
                              connections=256, timeout_s=5.0),
                run_open_loop(f"{base}/api/scans", rate=15, duration_s=duration_s, method="POST",
                              body=b"{}", headers={"content-type": "application/json"},
                              connections=16, timeout_s=5.0),
                run_open_loop(f"{base}/api/report", rate=10, duration_s=duration_s,
                              connections=16, timeout_s=5.0),
                poll_status(client),
                switch(client, duration_s * 0.5, "emergency", "demo: latency above target"),
                switch(client, duration_s * 0.8, "recovering", "demo: load is under control"),
            )  # fmt: skip
            final = (await client.get(f"{base}/_crisis/status")).json()
    finally:
        stop_server(proc)

    result = {
        "service": base,
        "duration_s": duration_s,
        "unloaded": {"p50_ms": p50, "p99_ms": p99, "capacity_rps": round(capacity, 1)},
        "work": _summary(work),
        "scans": _summary(scans),
        "report": _summary(report),
        "mode_switches": switches,
        "timeline": statuses,
        "guard": {
            "mode": final["mode"],
            "concurrency": final["concurrency"],
            "shed": final["shed"],
            "rate_limits": final["rate_limits"],
            "breakers": final["breakers"],
            "requests": final["requests"],
            "latency_ms": final["latency_ms"],
        },
    }
    if out_dir is not None:
        path = out_dir / "guard-demo.json"
        await asyncio.to_thread(_write_json, path, result)
        result["artefact"] = str(path)
    return result
