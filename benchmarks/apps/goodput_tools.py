"""Helpers of `benchmarks/overload_goodput.py`: the servers, the open-loop driver, its counters.

* `Server` runs one variant of `benchmarks/apps/capacity_app.py` under uvicorn on 127.0.0.1
  (pinned to the server core): ``unguarded``, ``guarded`` (``Guard(app)`` defaults),
  ``guarded_service`` (the guard with one service-wide concurrency limit),
  ``semaphore`` (a static semaphore of ``limit`` tried without waiting) and ``uvicorn_limit``
  (the bare app under ``uvicorn --limit-concurrency limit``);
* `closed_loop` and `unloaded` measure capacity and unloaded latency with the load engine;
* `drive_overload` sends a list of arrivals (offset, route) open-loop on keep-alive
  connections and reports each response (status, corrected latency, route, intended offset)
  to a callback; `events` run at given offsets (e.g. turning a route slow).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from benchmarks.apps.capacity_app import ENV_ITERS, ENV_MS, ENV_SEMAPHORE

from crisisctl.load import LoadResult, run_closed, run_open
from crisisctl.load.client import ERROR_KINDS, HttpClient, RequestError, build_request, parse_target
from crisisctl.stats import LatencyHistogram

__all__ = [
    "VARIANTS",
    "OverloadResult",
    "Server",
    "closed_loop",
    "drive_overload",
    "on_uvloop",
    "unloaded",
]

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
APP_MODULE = "benchmarks.apps.capacity_app"
ROOT = Path(__file__).resolve().parent.parent.parent
#: variant -> the app attribute it serves (uvicorn_limit: the bare app, limited by uvicorn)
VARIANTS = {
    "unguarded": "unguarded_app",
    "guarded": "guarded_app",
    "guarded_service": "guarded_service_app",
    "semaphore": "semaphore_app",
    "uvicorn_limit": "unguarded_app",
}
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """A uvicorn subprocess serving one variant of the capacity app on 127.0.0.1."""

    def __init__(
        self,
        variant: str,
        iters: int,
        pin_core: int | None,
        *,
        work_ms: float = 5.0,
        limit: int | None = None,
    ) -> None:
        self.variant = variant
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "uvicorn", f"{APP_MODULE}:{VARIANTS[variant]}",
            "--host", HOST, "--port", str(self.port), "--app-dir", str(ROOT),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            # uvicorn logs a warning per refused request: not part of what is measured
            "--log-level", "error" if variant == "uvicorn_limit" else "warning",
        ]  # fmt: skip
        if variant == "uvicorn_limit":
            cmd += ["--limit-concurrency", str(limit or 1)]
        if pin_core is not None:
            cmd = ["taskset", "-c", str(pin_core), *cmd]  # taskset execs: the pid is uvicorn's
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env[ENV_ITERS] = str(iters)
        env[ENV_MS] = str(work_ms)
        if variant == "semaphore":
            env[ENV_SEMAPHORE] = str(limit or 1)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )
        self.ps = psutil.Process(self.proc.pid)
        self.base = f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout_s)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def wait_ready(self, iters: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self._stderr()}")
            try:
                status, body = self.get("/info")
                if status == 200 and body == f"iters={iters}".encode():
                    return
                last = f"answered {status} {body[:80]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"{self.variant} server not ready within {timeout_s:.0f} s: {last}")

    def turn_slow(self, slow: bool = True) -> None:
        """Turn route /b slow (SIGUSR1) or back (SIGUSR2)."""
        self.proc.send_signal(signal.SIGUSR1 if slow else signal.SIGUSR2)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def guard_status(self) -> Any:
        """The guard's /_crisis/status document, if it answers (diagnostics only)."""
        try:
            status, body = self.get("/_crisis/status")
            if status == 200:
                return json.loads(body)
            return {"status": status, "body": body[:300].decode(errors="replace")}
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a uvloop event loop (cheaper per request than the default loop)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def ok_count(res: LoadResult) -> int:
    """2xx responses of an engine run."""
    return sum(n for code, n in res.status_counts.items() if 200 <= code <= 299)


def closed_loop(url: str, seconds: float, connections: int) -> dict[str, Any]:
    """`connections` closed-model users without think time, back to back."""
    res = on_uvloop(run_closed(url, users=connections, duration_s=seconds, timeout_s=5.0))
    lat = res.latency.summary()
    ok = ok_count(res)
    return {
        "connections": connections,
        "seconds": seconds,
        "completed": res.completed,
        "ok": ok,
        "errors": res.error_total,
        "throughput": ok / seconds,
        "service_p50_ms": lat.p50_ms,
        "service_p99_ms": lat.p99_ms,
    }


def unloaded(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Latency at a low open-model rate (corrected and uncorrected)."""
    res = on_uvloop(run_open(url, rate=rate, duration_s=seconds, connections=8, timeout_s=5.0))
    assert res.latency_uncorrected is not None  # always kept by the open model
    return {
        "rate": rate,
        "seconds": seconds,
        "completed": res.completed,
        "ok": ok_count(res),
        "errors": res.error_total,
        "latency": res.latency.summary().as_dict(),
        "latency_uncorrected": res.latency_uncorrected.summary().as_dict(),
    }


@dataclass
class OverloadResult:
    """The overload run's counts: ``intended == sent + unsent`` and ``sent == completed +
    sum(errors.values())``; latencies corrected (from the intended send time)."""

    rate: float
    duration_s: float
    connections: int
    intended: int = 0
    sent: int = 0
    completed: int = 0
    unsent: int = 0
    late_starts: int = 0
    elapsed_s: float = 0.0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    by_class: dict[str, LatencyHistogram] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.status_counts.items() if 200 <= code <= 299)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "connections": self.connections,
            "intended": self.intended,
            "sent": self.sent,
            "completed": self.completed,
            "unsent": self.unsent,
            "ok": self.ok,
            "status_counts": {str(code): n for code, n in sorted(self.status_counts.items())},
            "errors": dict(self.errors),
            "late_starts": self.late_starts,
            "elapsed_s": round(self.elapsed_s, 6),
            "latency": self.latency.summary().as_dict(),
            "achieved_rate": round(self.sent / self.duration_s, 3),
            "latency_by_class": {
                cls: hist.summary().as_dict() for cls, hist in sorted(self.by_class.items())
            },
        }


async def drive_overload(
    base_url: str,
    paths: Sequence[str],
    arrivals: Sequence[tuple[float, int]],
    *,
    duration_s: float,
    connections: int,
    timeout_s: float,
    on_response: Callable[[int, float, int, float], None],
    events: Sequence[tuple[float, Callable[[], None]]] = (),
) -> OverloadResult:
    """The engine's open model, by hand: `connections` keep-alive `HttpClient`s take the next
    arrival (offset s, index into `paths`), wait for its intended time and send; each
    response's status, corrected latency, route index and intended offset go to
    `on_response`. Nothing is sent after `duration_s`; what is still in flight `timeout_s`
    later counts as a timeout. `events` (offset, callback) run at their offsets."""
    target = parse_target(base_url + paths[0])  # loopback only
    requests = [build_request(parse_target(base_url + p)) for p in paths]
    res = OverloadResult(len(arrivals) / duration_s, duration_s, connections)
    res.intended = len(arrivals)
    pending = iter(arrivals)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    stop_at = t0 + duration_s
    for offset, callback in events:
        loop.call_later(offset, callback)

    async def worker() -> None:
        client = HttpClient(target, requests[0], timeout_s=timeout_s)
        in_flight = False
        try:
            for offset, route in pending:
                intended = t0 + offset
                if time.monotonic() >= stop_at:
                    return  # the schedule is over: this arrival and the rest stay unsent
                delay = intended - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at = time.monotonic()
                if sent_at - intended > 0.001:
                    res.late_starts += 1
                res.sent += 1
                in_flight = True
                try:
                    response = await client.send(request=requests[route])
                except RequestError as exc:
                    res.errors[exc.kind] = res.errors.get(exc.kind, 0) + 1
                    continue
                finally:
                    in_flight = False
                corrected = time.monotonic() - min(intended, sent_at)
                res.completed += 1
                res.status_counts[response.status] = res.status_counts.get(response.status, 0) + 1
                res.latency.record_us(int(corrected * 1_000_000))
                cls = f"{response.status // 100}xx"
                hist = res.by_class.get(cls)
                if hist is None:
                    hist = res.by_class[cls] = LatencyHistogram()
                hist.record_us(int(corrected * 1_000_000))
                on_response(response.status, corrected, route, offset)
        except asyncio.CancelledError:
            if in_flight:
                res.errors["timeout"] += 1
            raise
        finally:
            client.close()

    workers = [asyncio.create_task(worker()) for _ in range(min(connections, len(arrivals)))]
    try:
        await asyncio.wait(workers, timeout=duration_s + timeout_s)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    res.elapsed_s = time.monotonic() - t0
    res.unsent = res.intended - res.sent
    return res
