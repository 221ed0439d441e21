"""Server CPU microseconds added per request by each middleware, side by side, in one run.

The headline is the realistic app (`benchmarks/apps/realistic_app.py`: 50 routes with path
parameters, 1,000 clients behind a trusted proxy, two stacked per-client limits, RateLimit
headers on), bare, behind the guard, behind slowapi and behind the floor
(`benchmarks/apps/floor_middleware.py`: the least a Python middleware does for the same jobs,
none of the guard's other features: what doing those jobs in Python costs at all on the
machine measured) and behind the guard configured for those jobs only
(``realistic_guard_jobs_only``: no concurrency limit, timeout, breaker or loop health), loaded
by wrk with a Lua script that
cycles through its requests; target: the guard adds ≤ 10 µs there. The same rounds measure the
calibration ``realistic_work10``: the bare app doing exactly 10 µs more CPU work per request in
its handlers (realistic_app.py), what "10 µs added" reads as on this machine at this hour (more
than 10: a slower server's other costs per request grow too). The target is judged on the raw
figure and against the calibration (the guard adds no more than it; "paired": the median of
same-round differences guard − calibration ≤ 0). Beside them, today's best case (one
hello-world route, one client, one limit; target ≤ 5 µs) and the other variants.

Every variant of `benchmarks/apps/overhead_apps.py` (a hello-world route, bare or behind one
middleware) runs in its own uvicorn process (uvloop + httptools, one worker, no access log)
pinned to core 0, and is loaded by `wrk` pinned to core 1. After a warm-up, the server's CPU
time (utime + stime from /proc/PID/stat, via psutil) is read before and after a measured
`wrk` run; CPU µs/request = cpu_seconds * 1e6 / requests (its kernel part, stime, is stored
beside it: `cpu_system_s` per run, `kernel_us_per_req` per variant). So is how often a
response woke wrk (its voluntary context switches per request, from the rusage of the ended
child: `client_wakeups_per_req`): on loopback the server's write pays for that wake-up, so a
response written in two parts far apart (uvicorn writes the head at the app's start) can cost
the server a second one, a cost of the benchmark's set-up and of same-host proxies, not of the
code measured. A server lives through its
warm-up (`--warmup`, 2 s) and one measured run: a young server. State that grows with the
server's age (each route's adaptive limit keeps 30 s of latency history) is only at its full
size after 30 s, so ``make bench`` also runs the realistic variants with ``--warmup 35``, the
steady state, into ``guard_overhead_steady.json`` (the Makefile's ``STEADY``): a cost that
grows with age shows as a gap between the two. Rounds are interleaved (round 1 runs
every variant, then round 2 …, each round starting at a different variant) and the median per
variant is reported, with the µs added over its bare baseline (Starlette, or FastAPI for the
instrumentator) and the ratio of that cost to the guard's. Two second opinions are printed
next to it: the median of same-round differences ("paired") and the difference of the
per-variant minima ("by min": interference only ever adds CPU time). A run during which the
server was not the bottleneck (it used < 85 % of its core) or something else used > 10 % of
core 0 is "disturbed" (the machine is shared): it is repeated, up to `--retries` times.
The host itself can run slow too: a VM's neighbours can halve its speed for seconds without
any steal time showing. A fixed pure-Python loop (`host_probe_ms`) is timed on core 0 just
before and just after each measured run and stored with it; a run where either probe took
more than `HOST_SLOW_FACTOR` times the fastest probe of the benchmark is marked `host_slow`,
and the run's summary says how slow its host was. (Recorded, not yet acted on: whether the
probe right after a load run reads slow on a quiet host has not been measured; until it has,
retrying on it could triple a run's length for nothing.)

Idle CPUs poll instead of halting while the benchmark runs (`idle_polling`: it holds
``/dev/cpu_dma_latency`` at 0 µs, what tuned's latency profiles do; root only, else it says
why and runs without; ``--no-idle-polling`` turns it off). Why: on loopback the server's
response write wakes wrk in the server's own kernel time, and on a VM whose idle vCPU halts
that wake-up is a virtual interrupt to a halted vCPU, several µs that grow with how long wrk
waited, so with the server's slowness: on the AMD EPYC VM (2026-12-07, one `perf record` by
hand of each server), 7.2 µs per request of the bare app's time went to waking wrk, 10.2 µs of
the guard's. On a real network that cost is the client host's. With idle CPUs polling, the
bare app's kernel time per request fell by ~2.5 µs (to 14.5-16.8), its cost to 56-59 µs (the
issue's reference machine: 54.6), and the calibration read a median of 9.45 µs over five runs
(11.27 over four runs halting). A run records whether it polled (``machine.idle_polling``); the
medians to report keep the two apart.

The guard runs compiled by mypyc (see hatch_build.py); ``guard_pure`` is the same guard run from
its Python source (``CRISISCTL_PURE_PYTHON=1``) and ``guard_no_rate_headers`` the same guard
without RateLimit headers on successful responses, to show what each costs. Besides µs on this
machine, the guard's cost is given as a share of slowapi's and the instrumentator's, in µs of
the issue's reference machine (where they add 57 and 46 µs): a view that does not depend on
how fast this machine is.

Every run is appended to ``benchmarks/results/guard_overhead.json`` (a list of runs, see
`benchmarks/apps/history.py`), and the figures to report are the medians over every stored
full run, printed at the end: never the best run. Beside them, the same runs are asked round
by round (`benchmarks/apps/pooled.py`): the paired difference of every round of every run of
this code, pooled, with a 95 % interval that resamples runs and then their rounds. On a host
whose speed swings between rounds, a handful of run medians cannot place a figure within a
few µs of the target; the interval says how far the rounds can. A run of fewer variants and
more rounds (``--variants realistic_bare,realistic_guard,realistic_work10,realistic_floor
--rounds 15``) adds three times the headline's rounds per minute to that estimate, and counts
among the full runs like any other.

Run from the project root: ``.venv/bin/python benchmarks/guard_overhead.py [--quick]``.
Exits 0 whether or not the targets (`realistic_guard_added_us <= 10.0`,
`guard_added_us <= 5.0`) are met; non-zero only when a variant could not be measured.
All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "guard_overhead.json"
APP_MODULE = "benchmarks.apps.overhead_apps"
TARGET_GUARD_ADDED_US = 5.0
TARGET_REALISTIC_ADDED_US = 10.0
#: what the issue measured on its reference machine, µs added per request
REFERENCE_ADDED_US = {"slowapi": 57.0, "instrumentator": 46.0}
#: a run where the server used less of its core, or anything else used more, is disturbed
MIN_SERVER_UTIL = 0.85
MAX_INTERFERENCE = 0.1
RETRY_PAUSE_S = 5.0
#: a run whose host probe took longer than this times the fastest probe is on a slow host
HOST_SLOW_FACTOR = 1.2
#: iterations of the host probe's loop (4.3 ms at best on the AMD EPYC VM, 2026-12-06 night)
HOST_PROBE_LOOPS = 100_000
HOST = "127.0.0.1"  # the only address this benchmark ever talks to

sys.path.insert(0, str(ROOT))
from benchmarks.apps.history import (  # noqa: E402
    append_run,
    code_fingerprint,
    load_runs,
    print_median,
)
from benchmarks.apps.overhead_apps import REALISTIC, VARIANT_ENV, VARIANTS  # noqa: E402
from benchmarks.apps.pooled import paired_rounds, pooled_paired  # noqa: E402
from benchmarks.apps.realistic_app import wrk_script  # noqa: E402

DEFAULT_VARIANTS = (
    "realistic_bare",
    "realistic_guard",
    "realistic_slowapi",
    "realistic_floor",
    "realistic_guard_jobs_only",
    "realistic_work10",
    "bare",
    "empty_asgi",
    "guard",
    "guard_pure",
    "guard_no_rate_headers",
    "guard_metrics_only",
    "slowapi",
    "bare_fastapi",
    "instrumentator",
)


@dataclass
class Run:
    """One measured wrk run against one variant."""

    variant: str
    round: int
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    cpu_s: float = 0.0
    #: the part of `cpu_s` spent in the kernel (stime): sockets, wake-ups, page faults
    cpu_system_s: float = 0.0
    #: wrk's voluntary context switches per request: how often a response found the client
    #: asleep and woke it (on loopback, in the server's kernel time)
    client_wakeups_per_req: float | None = None
    cpu_us_per_req: float = 0.0
    #: server CPU seconds per wall second of the run (≈ 1.0: the server was the bottleneck)
    server_util: float = 0.0
    #: share of core 0 used by anything but the server during the run (pinned runs)
    interference: float = 0.0
    #: share of core 0 the hypervisor stole during the run
    steal: float = 0.0
    #: the host probe on core 0 just before and just after the run, ms (`host_probe_ms`)
    host_probe_before_ms: float = 0.0
    host_probe_after_ms: float = 0.0
    #: either probe took more than HOST_SLOW_FACTOR times the fastest one so far
    host_slow: bool = False
    attempt: int = 1
    #: the server was not the bottleneck, or something else ran on its core: retried
    disturbed: bool = False
    #: the attempt that counts for this variant and round
    used: bool = False
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    latency_avg: str = ""
    valid: bool = False
    error: str | None = None


# -- environment ---------------------------------------------------------------------------
def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print("wrk is missing: installing it with scripts/ensure-system-packages.sh")
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "ensure-system-packages.sh"), "wrk"], check=True
        )
        path = shutil.which("wrk")
    if path is None:
        raise SystemExit("error: wrk is not installed and could not be installed")
    return path


def pinning() -> tuple[bool, str]:
    """(pin?, why): pin the server to core 0 and the load to core 1 when possible."""
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return False, "taskset (util-linux) is missing: running unpinned"
    if len(cores) < 2 or cores[:2] != [0, 1]:
        return False, f"fewer than 2 usable cores ({cores}): running unpinned"
    return True, "server on core 0, wrk on core 1"


@contextlib.contextmanager
def idle_polling(wanted: bool) -> Iterator[tuple[bool, str]]:
    """Hold the CPUs' wake-up latency at 0 µs (PM QoS, ``/dev/cpu_dma_latency``) while inside:
    idle CPUs poll instead of halting, so waking wrk costs no virtual interrupt to a halted vCPU
    (the module docstring). Yields (held?, why); the kernel drops the request when the file
    closes."""
    if not wanted:
        yield False, "off (--no-idle-polling): idle CPUs halt"
        return
    try:
        qos = open("/dev/cpu_dma_latency", "wb", buffering=0)  # noqa: SIM115 (held open)
    except OSError as exc:
        yield False, f"/dev/cpu_dma_latency could not be opened ({exc.strerror}): idle CPUs halt"
        return
    try:
        qos.write(struct.pack("i", 0))
        yield True, "idle CPUs poll (/dev/cpu_dma_latency held at 0 µs)"
    finally:
        qos.close()


def core_times(core: int) -> tuple[float, float]:
    """(busy, steal) CPU seconds of one core since boot, from /proc/stat."""
    times = psutil.cpu_times(percpu=True)[core]
    busy = sum(float(getattr(times, f, 0.0)) for f in ("user", "nice", "system", "irq", "softirq"))
    return busy, float(getattr(times, "steal", 0.0))


def host_probe_ms(pin: bool) -> float:
    """How long a fixed pure-Python loop takes on the server's core (core 0 when pinned), ms:
    the median of five timings. (This process lives on core 1; it visits core 0 for the probe,
    when the server is idle.)"""
    if pin:
        os.sched_setaffinity(0, {0})
    try:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            total = 0
            for i in range(HOST_PROBE_LOOPS):
                total += i
            times.append(time.perf_counter() - started)
    finally:
        if pin:
            os.sched_setaffinity(0, {1})
    return statistics.median(times) * 1000.0


class HostSpeed:
    """The fastest host probe of this benchmark so far, and whether a probe is slow."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.fastest = min(host_probe_ms(pin) for _ in range(5))

    def probe(self) -> float:
        took = host_probe_ms(self.pin)
        self.fastest = min(self.fastest, took)
        return took

    def ratio(self, run: Run) -> float:
        """How much slower than the fastest probe the host was around `run` (its slower
        probe)."""
        return max(run.host_probe_before_ms, run.host_probe_after_ms) / self.fastest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(variant: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRISISCTL_PURE_PYTHON", None)
    env.update(VARIANT_ENV.get(variant, {}))
    paths = [str(ROOT / "src"), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in (
        "uvicorn",
        "starlette",
        "fastapi",
        "slowapi",
        "limits",
        "prometheus-fastapi-instrumentator",
        "prometheus_client",
        "uvloop",
        "httptools",
        "psutil",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def guard_compiled() -> bool:
    """Whether the guard variants run the mypyc-compiled request path (guard_pure never does)."""
    from crisisctl._pure import compiled

    return compiled()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# -- server ---------------------------------------------------------------------------------
class Server:
    """A uvicorn subprocess serving one variant on 127.0.0.1."""

    def __init__(self, variant: str, pin: bool) -> None:
        self.variant = variant
        self.port = free_port()
        attr = VARIANTS[variant][0]
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            f"{APP_MODULE}:{attr}",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--app-dir",
            str(ROOT),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ]
        if pin:
            cmd = ["taskset", "-c", "0", *cmd]  # taskset execs: the pid is uvicorn's
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=server_env(self.variant),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2.0)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 200 and body == b"hello":
                    return
                last = f"GET / answered {resp.status} {body[:80]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout_s:.0f} s: {last}")

    def cpu_seconds(self) -> tuple[float, float]:
        """The server's CPU seconds so far: (user + system, system)."""
        times = self.ps.cpu_times()
        return float(times.user + times.system), float(times.system)

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


# -- wrk ------------------------------------------------------------------------------------
_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "G": 1e9}


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests, duration, non-2xx count, socket errors and average latency of a wrk run."""
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not match:
        raise ValueError(f"cannot read wrk output: {out[-500:]!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[match.group(3)]
    result: dict[str, Any] = {
        "requests": int(match.group(1)),
        "duration_s": float(match.group(2)) * scale,
        "non_2xx": 0,
        "socket_errors": {},
        "latency_avg": "",
    }
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non:
        result["non_2xx"] = int(non.group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errs:
        result["socket_errors"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, errs.groups()), strict=True)
        )
    lat = re.search(r"Latency\s+(\S+)", out)
    if lat:
        result["latency_avg"] = lat.group(1)
    return result


def run_wrk(
    wrk: str, port: int, seconds: float, connections: int, pin: bool, script: Path | None = None
) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(f"http://{HOST}:{port}/")
    if pin:
        cmd = ["taskset", "-c", "1", *cmd]
    waits_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    # (wrk is the only child that ends meanwhile: taskset execs it, the server lives on)
    waits = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw - waits_before
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    result = parse_wrk(proc.stdout)
    result["client_waits"] = waits
    return result


def measure(
    variant: str, rnd: int, args: argparse.Namespace, wrk: str, pin: bool, host: HostSpeed
) -> Run:
    run = Run(variant=variant, round=rnd)
    server = Server(variant, pin)
    script = args.realistic_script if variant in REALISTIC else None
    try:
        server.wait_ready()
        if args.warmup > 0:
            run_wrk(wrk, server.port, args.warmup, args.connections, pin, script)
        time.sleep(0.2)  # let the warm-up connections close
        run.host_probe_before_ms = host.probe()
        core_before = core_times(0)
        before, system_before = server.cpu_seconds()
        out = run_wrk(wrk, server.port, args.duration, args.connections, pin, script)
        after, system_after = server.cpu_seconds()
        run.cpu_s = after - before
        run.cpu_system_s = system_after - system_before
        core_after = core_times(0)
        run.host_probe_after_ms = host.probe()
        run.host_slow = host.ratio(run) > HOST_SLOW_FACTOR
        run.requests = out["requests"]
        run.duration_s = out["duration_s"]
        run.rps = run.requests / run.duration_s if run.duration_s else 0.0
        run.non_2xx = out["non_2xx"]
        run.socket_errors = out["socket_errors"]
        run.latency_avg = out["latency_avg"]
        if run.requests:
            run.client_wakeups_per_req = out["client_waits"] / run.requests
        run.cpu_us_per_req = run.cpu_s * 1e6 / run.requests if run.requests else 0.0
        run.server_util = run.cpu_s / run.duration_s if run.duration_s else 0.0
        if pin and run.duration_s:
            others = (core_after[0] - core_before[0]) - run.cpu_s
            run.interference = max(0.0, others) / run.duration_s
            run.steal = (core_after[1] - core_before[1]) / run.duration_s
        run.disturbed = run.server_util < MIN_SERVER_UTIL or run.interference > MAX_INTERFERENCE
        if run.requests == 0:
            run.error = "wrk completed no request"
        elif run.non_2xx:
            run.error = f"{run.non_2xx} non-2xx responses: run invalid"
        elif sum(run.socket_errors.values()):
            run.error = f"socket errors {run.socket_errors}: run invalid"
        run.valid = run.error is None
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        run.error = str(exc)
    finally:
        server.stop()
    if run.error:
        print(f"  ERROR {variant} round {rnd}: {run.error}", file=sys.stderr)
    return run


# -- report ---------------------------------------------------------------------------------
def paired_difference(runs: list[Run], name: str, other: str) -> float | None:
    """Median over the rounds where both were measured of `name`'s CPU µs/request minus
    `other`'s (None: no such round); the rounds are paired as the pooled estimate pairs the
    stored ones (`benchmarks/apps/pooled.py`)."""
    diffs = paired_rounds({"rounds": [asdict(r) for r in runs]}, name, other)
    return statistics.median(diffs) if diffs else None


def summarize(runs: list[Run], variants: list[str]) -> dict[str, dict[str, Any]]:
    med: dict[str, dict[str, Any]] = {}
    for name in variants:
        ok = [r for r in runs if r.variant == name and r.valid and r.used]
        wakeups = [r.client_wakeups_per_req for r in ok if r.client_wakeups_per_req is not None]
        med[name] = {
            "baseline": VARIANTS[name][2],
            "valid_rounds": len(ok),
            "invalid_rounds": sum(1 for r in runs if r.variant == name and r.used and not r.valid),
            "disturbed_used": sum(1 for r in ok if r.disturbed),
            "host_slow_used": sum(1 for r in ok if r.host_slow),
            "attempts": sum(1 for r in runs if r.variant == name),
            "cpu_us_per_req": statistics.median(r.cpu_us_per_req for r in ok) if ok else None,
            # interference only ever adds CPU time: the minimum is a robust second opinion
            "cpu_us_per_req_min": min(r.cpu_us_per_req for r in ok) if ok else None,
            "rps": statistics.median(r.rps for r in ok) if ok else None,
            "cpu_us_per_req_all_rounds": [round(r.cpu_us_per_req, 3) for r in ok],
            # the kernel's part (a slower server's wake-ups and socket work per request grow)
            "kernel_us_per_req": statistics.median(
                r.cpu_system_s * 1e6 / r.requests for r in ok if r.requests
            )
            if ok
            else None,
            "client_wakeups_per_req": statistics.median(wakeups) if wakeups else None,
        }
    for name in variants:
        row = med[name]
        base = med.get(row["baseline"])
        row["added_us"] = None
        row["added_us_min"] = None
        row["added_us_paired_median"] = None
        if base is None or row["cpu_us_per_req"] is None or base["cpu_us_per_req"] is None:
            continue
        row["added_us"] = row["cpu_us_per_req"] - base["cpu_us_per_req"]
        row["added_us_min"] = row["cpu_us_per_req_min"] - base["cpu_us_per_req_min"]
        # same-round differences, less sensitive to drift of the machine between rounds
        row["added_us_paired_median"] = paired_difference(runs, name, row["baseline"])
    guard_added = med.get("guard", {}).get("added_us")
    for name in variants:
        row = med[name]
        row["ratio_vs_guard"] = (
            row["added_us"] / guard_added
            if row["added_us"] is not None and guard_added not in (None, 0)
            else None
        )
    return med


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def print_table(med: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'variant':<20} {'baseline':<15} {'req/s':>8} {'CPU µs/req':>11} "
        f"{'added µs':>9} {'paired':>7} {'by min':>7} {'× guard':>8} {'valid':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, row in med.items():
        rounds = f"{row['valid_rounds']}/{row['valid_rounds'] + row['invalid_rounds']}"
        print(
            f"{name:<20} {row['baseline']:<15} {fmt(row['rps'], '.0f'):>8} "
            f"{fmt(row['cpu_us_per_req']):>11} {fmt(row['added_us']):>9} "
            f"{fmt(row['added_us_paired_median']):>7} {fmt(row['added_us_min']):>7} "
            f"{fmt(row['ratio_vs_guard']):>8} "
            f"{rounds:>6}"
        )


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


#: what a run measured: the guard's sources, the benchmark and its apps (a run of other code
#: is history, not part of today's median)
CODE = (
    "src/crisisctl/guard/*.py",
    "benchmarks/apps/overhead_apps.py",
    "benchmarks/apps/realistic_app.py",
    "benchmarks/apps/floor_middleware.py",
)


def report_medians(stored: list[dict[str, Any]], code: str, cpu: str) -> None:
    """The figures to report: medians over every stored full run of this code on this kind of
    machine (never the best run), then over every stored full run, whatever code and machine
    (µs per request differ ~2.5× between the machines this project has run on)."""
    same = [run for run in stored if run.get("code") == code and run["machine"]["cpu_model"] == cpu]
    polled = [run for run in same if run["machine"].get("idle_polling")]
    halted = [run for run in same if not run["machine"].get("idle_polling")]
    groups = [  # (which runs, what they are for, the runs, pooled: one code's runs only)
        (f"of this code ({code}) on this CPU ({cpu}), idle CPUs polling",
         ": the figures to report", polled, True),
        ("of this code on this CPU, idle CPUs halting (--no-idle-polling, or not root)", "",
         halted, True),
        ("of any code on any machine (history)", "", stored, False),
    ]  # fmt: skip
    for scope, purpose, runs, pooled in groups:
        if not runs:
            print(f"\nno stored full run {scope}")
            continue
        print(f"\nmedians over every stored full run {scope}{purpose}:")
        for name, label in (
            ("realistic_guard", "realistic app, guard added µs"),
            ("realistic_slowapi", "realistic app, slowapi added µs"),
            ("realistic_floor", "realistic app, floor (least middleware doing its jobs) added µs"),
            ("realistic_guard_jobs_only", "realistic app, guard doing only those jobs added µs"),
            ("realistic_work10", "realistic app, calibration (10 µs more work) added µs"),
            ("guard", "best case, guard added µs"),
            ("slowapi", "best case, slowapi added µs"),
        ):
            print_median(f"  {label}", runs, lambda run, n=name: run["medians"][n]["added_us"])
        print_median(
            "  realistic app, guard minus calibration, paired µs (≤ 0: the guard adds no more "
            "than 10 µs of work)",
            runs,
            lambda run: run["target"]["calibrated"]["paired_median_guard_minus_work10_us"],
        )
        if pooled:
            report_pooled(runs)


#: the pooled figures: (variant, baseline, label)
POOLED = (
    ("realistic_guard", "realistic_bare", "realistic app, guard − bare"),
    ("realistic_work10", "realistic_bare", "realistic app, calibration (10 µs of work) − bare"),
    ("realistic_guard", "realistic_work10", "realistic app, guard − calibration"),
    ("realistic_floor", "realistic_bare", "realistic app, floor − bare"),
    ("realistic_guard_jobs_only", "realistic_bare", "realistic app, guard, only those jobs − bare"),
    ("guard", "bare", "best case, guard − bare"),
)  # fmt: skip


def report_pooled(runs: list[dict[str, Any]]) -> None:
    """The same runs asked round by round (`benchmarks/apps/pooled.py`): every round's paired
    difference pooled, its median and a 95 % interval that resamples runs, then rounds."""
    full = [run for run in runs if not run.get("quick")]
    if not full:
        return
    print("  pooled over their rounds, paired per round (median [95 % interval], µs):")
    for name, other, label in POOLED:
        est = pooled_paired(full, name, other)
        if est is None:
            continue
        print(
            f"    {label}: {est.median:+.2f} [{est.low:+.2f}, {est.high:+.2f}] "
            f"({est.rounds} rounds of {est.runs} runs)"
        )


def per_variant(med: dict[str, dict[str, Any]], key: str, digits: int) -> str:
    """ "name figure, …" of one summary figure, for the variants that have it."""
    return ", ".join(
        f"{name} {row[key]:.{digits}f}" for name, row in med.items() if row.get(key) is not None
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help="comma list of variants"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="repeats of a disturbed run (shared machine)"
    )
    parser.add_argument(
        "--no-idle-polling", action="store_true", help="let idle CPUs halt (see the docstring)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 3 s")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON result file")
    parser.add_argument(
        "--report", action="store_true", help="print the medians of the stored runs, run nothing"
    )
    args = parser.parse_args(argv)
    if args.report:
        runs = load_runs(args.output)
        if not runs:
            parser.error(f"no stored run in {args.output}: run the benchmark first")
        report_medians(runs, code_fingerprint(*CODE), cpu_model())
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be at least 1")
    # baselines are measured too, so every added cost can be computed
    for name in list(variants):
        base = VARIANTS[name][2]
        if base not in variants:
            variants.insert(0, base)

    wrk = ensure_wrk()
    scripts = tempfile.TemporaryDirectory(prefix="guard-overhead-")
    args.realistic_script = Path(scripts.name) / "realistic.lua"
    args.realistic_script.write_text(wrk_script())
    usable_cores = sorted(os.sched_getaffinity(0))
    pin, why = pinning()
    print(f"guard_overhead: {', '.join(variants)}; {args.rounds} round(s) of {args.duration:.0f} s")
    print(f"pinning: {why}")
    if pin:
        os.sched_setaffinity(0, {1})  # keep this process off the server's core

    with idle_polling(not args.no_idle_polling) as (polling, polling_why):  # (however it ends)
        print(f"idle: {polling_why}")

        host = HostSpeed(pin)
        print(f"host probe: {host.fastest:.2f} ms at best (a run's host is slow above "
              f"{HOST_SLOW_FACTOR:.1f}× the fastest probe)")  # fmt: skip
        started = time.time()
        runs: list[Run] = []
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(variants)
            for name in variants[shift:] + variants[:shift]:
                for attempt in range(1, args.retries + 2):
                    run = measure(name, rnd, args, wrk, pin, host)
                    run.attempt = attempt
                    runs.append(run)
                    state = "ok" if run.valid else "INVALID"
                    if run.valid and run.disturbed:
                        state = "disturbed"
                    print(
                        f"  round {rnd} {name:<20} {run.rps:>9.0f} req/s "
                        f"{run.cpu_us_per_req:>8.2f} µs/req  util {run.server_util:.2f} "
                        f"others {run.interference:.2f}  host at {host.ratio(run):.2f}×  {state}"
                    )
                    if not run.disturbed or run.non_2xx:
                        break
                    time.sleep(RETRY_PAUSE_S)  # let the neighbour's burst pass
                run.used = True  # the first undisturbed attempt, else the last one

    med = summarize(runs, variants)
    used = [r for r in runs if r.used and r.valid]
    host_ratio = statistics.median(host.ratio(r) for r in used) if used else None
    print()
    print_table(med)
    print("kernel (stime) µs/request of the above: " + per_variant(med, "kernel_us_per_req", 1))
    print(
        "wrk's wake-ups per request (voluntary context switches): "
        + per_variant(med, "client_wakeups_per_req", 3)
    )
    if host_ratio is not None:
        slow = sum(1 for r in used if r.host_slow)
        print(
            f"host: the probe took {host_ratio:.2f}× its fastest (median of the rounds used); "
            f"{slow} of {len(used)} rounds on a slow host (> {HOST_SLOW_FACTOR}×)"
        )
    guard_added = med.get("guard", {}).get("added_us")
    realistic_added = med.get("realistic_guard", {}).get("added_us")
    slowapi_realistic = med.get("realistic_slowapi", {}).get("added_us")
    floor_realistic = med.get("realistic_floor", {}).get("added_us")
    work10 = med.get("realistic_work10", {}).get("added_us")
    calibrated_paired = paired_difference(runs, "realistic_guard", "realistic_work10")
    target: dict[str, Any] = {
        "check": f"guard_added_us <= {TARGET_GUARD_ADDED_US}",
        "guard_added_us": guard_added,
        "pass": None if guard_added is None else guard_added <= TARGET_GUARD_ADDED_US,
        "realistic": {
            "check": f"realistic_guard_added_us <= {TARGET_REALISTIC_ADDED_US}",
            "realistic_guard_added_us": realistic_added,
            "realistic_slowapi_added_us": slowapi_realistic,
            "realistic_floor_added_us": floor_realistic,
            "pass": None
            if realistic_added is None
            else realistic_added <= TARGET_REALISTIC_ADDED_US,
        },
        "calibrated": {
            "check": "realistic_guard_added_us <= realistic_work10_added_us (the bare app doing "
            f"exactly {TARGET_REALISTIC_ADDED_US:g} µs more work per request, same rounds)",
            "realistic_guard_added_us": realistic_added,
            "realistic_work10_added_us": work10,
            "paired_median_guard_minus_work10_us": calibrated_paired,
            "pass": None
            if realistic_added is None or work10 is None
            else realistic_added <= work10,
        },
    }
    # the reference machine measured slowapi at +57 µs and the instrumentator at +46 µs:
    # the guard's cost as a share of theirs, in that machine's µs (a machine-independent view)
    for peer, reference_us in REFERENCE_ADDED_US.items():
        peer_added = med.get(peer, {}).get("added_us")
        target[f"guard_added_us_scaled_by_{peer}"] = (
            round(guard_added / peer_added * reference_us, 2)
            if guard_added is not None and peer_added
            else None
        )
    verdicts = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}
    print(
        f"\ntarget realistic_guard_added_us <= {TARGET_REALISTIC_ADDED_US}: "
        f"{verdicts[target['realistic']['pass']]} (this run: guard added "
        f"{fmt(realistic_added)} µs/request on the realistic app, slowapi "
        f"{fmt(slowapi_realistic)} µs, the floor {fmt(floor_realistic)} µs)"
    )
    print(
        f"calibrated: guard added <= the app doing {TARGET_REALISTIC_ADDED_US:g} µs more work: "
        f"{verdicts[target['calibrated']['pass']]} (this run: {fmt(realistic_added)} µs against "
        f"{fmt(work10)} µs; paired guard − calibration {fmt(calibrated_paired)} µs)"
    )
    print(
        f"target {target['check']} (best case): {verdicts[target['pass']]} "
        f"(this run: guard added {fmt(guard_added)} µs/request)"
    )
    for peer, reference_us in REFERENCE_ADDED_US.items():
        scaled = target[f"guard_added_us_scaled_by_{peer}"]
        print(
            f"  on the issue's reference machine ({peer} +{reference_us:.0f} µs there): "
            f"≈ {fmt(scaled)} µs"
        )

    doc = {
        "benchmark": "guard_overhead",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "usable_cores": usable_cores,
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "pinned": pin,
            "pinning": why,
            "idle_polling": polling,
            "idle": polling_why,
            "wrk": wrk_version(wrk),
            "versions": versions(),
            "guard_compiled": guard_compiled(),
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "retries": args.retries,
            "disturbed_if": f"server_util < {MIN_SERVER_UTIL} or others > {MAX_INTERFERENCE}",
            "host_slow_if": f"a host probe > {HOST_SLOW_FACTOR} × the fastest",
            "host_probe_loops": HOST_PROBE_LOOPS,
            "host_probe_fastest_ms": host.fastest,
            "host_probe_median_ratio": host_ratio,
            "server": "uvicorn --loop uvloop --http httptools --no-access-log, 1 worker",
            "variants": variants,
            "apps": f"{APP_MODULE}:<variant>_app",
        },
        "rounds": [asdict(r) for r in runs],
        "medians": med,
        "target": target,
        "code": code_fingerprint(*CODE),
    }
    stored = append_run(args.output, doc, quick=args.quick)
    print(f"appended this run to {args.output} ({len(stored)} stored)")
    report_medians(stored, doc["code"], doc["machine"]["cpu_model"])
    scripts.cleanup()
    broken = [r for r in runs if r.used and not r.valid]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
