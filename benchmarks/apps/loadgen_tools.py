"""Helpers of `benchmarks/loadgen_throughput.py`: pinned processes, their CPU, tool outputs.

* `run_pinned` runs a command pinned to one core (``taskset -c``), bounded in time, and
  takes its CPU time (user + sys) from `os.wait4`'s rusage, which is exact for the whole
  process even after it has exited;
* `Server` is the bare Starlette hello-world under uvicorn, pinned to the server core;
* `parse_wrk`, `parse_hey` and `parse_json_out` turn each tool's output into the same dict:
  ``requests`` (successful responses), ``errors``, ``wall_s``, ``p50_ms``/``p99_ms`` and,
  for the Python generators, their own ``cpu_s`` over the sending window.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from benchmarks.guard_overhead import cpu_model, free_port, server_env, write_json, wrk_version

__all__ = [
    "GeneratorRun",
    "Server",
    "core_times",
    "cpu_model",
    "parse_hey",
    "parse_json_out",
    "parse_wrk",
    "run_pinned",
    "tool_versions",
    "write_json",
]

HOST = "127.0.0.1"
APP = "benchmarks.apps.overhead_apps:bare_app"
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


# -- processes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorRun:
    """A finished pinned process: exit code, CPU seconds (user + sys), wall seconds, output."""

    returncode: int
    cpu_s: float
    wall_s: float
    output: str
    #: of `cpu_s`, the kernel's share (system calls: for a load generator, mostly the network)
    sys_s: float = 0.0


def run_pinned(
    cmd: list[str], core: int, timeout_s: float, env_extra: dict[str, str], cwd: Path
) -> GeneratorRun:
    """Run `cmd` on `core` (killed after `timeout_s`); stdout and stderr are merged."""
    env = server_env()
    env.update(env_extra)
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["taskset", "-c", str(core), *cmd],  # taskset execs: the pid is the command's
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return GeneratorRun(
        proc.returncode, usage.ru_utime + usage.ru_stime, wall, text, usage.ru_stime
    )


def core_times(core: int) -> float:
    """Busy CPU seconds of one core since boot (user, nice, system, irq, softirq)."""
    times = psutil.cpu_times(percpu=True)[core]
    return sum(float(getattr(times, f, 0.0)) for f in ("user", "nice", "system", "irq", "softirq"))


class Server:
    """uvicorn serving the bare Starlette app on 127.0.0.1, pinned to `core`; over TLS when
    given `tls` (a PEM file holding the certificate chain and its key)."""

    def __init__(self, core: int, tls: Path | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        root = Path(__file__).resolve().parent.parent.parent
        cmd = [
            "taskset", "-c", str(core), sys.executable, "-m", "uvicorn", APP,
            "--host", HOST, "--port", str(self.port), "--app-dir", str(root),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        if tls is not None:
            cmd += ["--ssl-certfile", str(tls), "--ssl-keyfile", str(tls)]
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                conn: http.client.HTTPConnection
                if self.tls is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=2.0)
                else:  # readiness only: the certificate is checked by the generators
                    unverified = ssl._create_unverified_context()
                    conn = http.client.HTTPSConnection(
                        HOST, self.port, timeout=2.0, context=unverified
                    )
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 200 and body == b"hello":
                    return
                last = f"GET / answered {resp.status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout_s:.0f} s: {last}")

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"wrk": wrk_version("wrk")}
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True
        )
        out["hey"] = proc.stdout.strip() or None
    except OSError:
        out["hey"] = None
    for dist in ("crisisctl", "locust", "aiohttp", "httpx", "uvloop", "httptools", "uvicorn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["starlette"] = metadata.version("starlette")
    return out


# -- tool outputs -------------------------------------------------------------------------------
def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's summary (run with ``--latency``): responses, errors, duration, percentiles."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text)
    if done is None:
        raise ValueError(f"cannot read wrk's output: {text.strip()[-300:]!r}")
    total = int(done.group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(non_2xx.group(1)) if non_2xx else 0
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    socket_errors = sum(map(int, sockets.groups())) if sockets else 0
    pct = {
        int(m.group(1)): _ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if float(m.group(1)).is_integer()
    }
    return {
        "requests": total - bad,
        "errors": bad + socket_errors,
        "wall_s": _ms(done.group(2), done.group(3)) / 1000.0,
        "p50_ms": pct.get(50),
        "p99_ms": pct.get(99),
    }


def parse_hey(text: str) -> dict[str, Any]:
    """hey's summary: 2xx responses, other statuses and errors, total time, percentiles."""
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    if total is None:
        raise ValueError(f"cannot read hey's output: {text.strip()[-300:]!r}")
    ok = bad = 0
    for m in re.finditer(r"^\s+\[(\d{3})\]\s+(\d+) responses", text, re.M):
        if 200 <= int(m.group(1)) < 300:
            ok += int(m.group(2))
        else:
            bad += int(m.group(2))
    errors = 0
    if "Error distribution:" in text:
        tail = text.split("Error distribution:", 1)[1]
        errors = sum(int(m.group(1)) for m in re.finditer(r"^\s+\[(\d+)\]\s", tail, re.M))
    pct = {
        int(m.group(1)): float(m.group(2)) * 1000.0
        for m in re.finditer(r"^\s+(\d+)% in ([\d.]+) secs", text, re.M)
    }
    return {
        "requests": ok,
        "errors": bad + errors,
        "wall_s": float(total.group(1)),
        "p50_ms": pct.get(50),
        "p99_ms": pct.get(99),
    }


def parse_json_out(text: str) -> dict[str, Any]:
    """The JSON line of `loadgen_clients.py` or of the generated locustfile's listeners."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"not a generator result: {text.strip()[-300:]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a generator result: {text.strip()[-300:]!r}")
    missing = [k for k in ("requests", "errors", "cpu_s", "wall_s") if k not in data]
    if missing:
        raise ValueError(f"generator result without {', '.join(missing)}")
    return data
