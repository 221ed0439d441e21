"""Host resource evidence via psutil: the seeds' resource snapshot, as JSON-ready dicts.

`host_snapshot(pid)` is the one-shot form: it measures CPU over a short interval and returns
system CPU, load average, memory (with a pressure level), disk, the busiest processes and, when
`pid` is given, that process's CPU, RSS, threads, open files, sockets and listening ports.
`HostWindow` measures the same over a longer window (triage opens it before its probes and
closes it after), adding the process's RSS growth over the window.

Nothing here raises for a process that vanished or that we may not inspect: the affected field
holds the string ``"unavailable: <reason>"`` instead (see `unavailable()`).
All functions are synchronous (psutil reads /proc); async callers run them in a thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import psutil

MB: Final = 1024.0 * 1024.0
#: loopback and wildcard addresses a local service may listen on
LOCAL_LISTEN_ADDRESSES: Final = frozenset({"127.0.0.1", "::1", "0.0.0.0", "::"})
#: the seeds' resource thresholds (bottleneck analyser and validation suite)
CPU_HIGH_PERCENT: Final = 80.0
CPU_CRITICAL_PERCENT: Final = 90.0
MEMORY_HIGH_PERCENT: Final = 85.0
MEMORY_CRITICAL_PERCENT: Final = 90.0
PROCESS_RSS_LIMIT_MB: Final = 2048.0
RSS_GROWTH_LEAK_MB: Final = 100.0
#: shortest window over which an RSS growth rate per minute is worth extrapolating
MIN_RATE_WINDOW_S: Final = 1.0
UNAVAILABLE: Final = "unavailable"
_PSI_MEMORY: Final = Path("/proc/pressure/memory")

T = TypeVar("T")


def unavailable(reason: str) -> str:
    """The value of a field that could not be read, e.g. ``"unavailable: access denied"``."""
    return f"{UNAVAILABLE}: {reason}"


def is_unavailable(value: object) -> bool:
    """Whether a snapshot field holds an `unavailable()` marker instead of data."""
    return isinstance(value, str) and value.startswith(UNAVAILABLE)


def _why(exc: Exception) -> str:
    if isinstance(exc, psutil.NoSuchProcess):
        return "the process exited"
    if isinstance(exc, psutil.AccessDenied):
        return "access denied (run as the process owner or root)"
    if isinstance(exc, psutil.ZombieProcess):
        return "the process is a zombie"
    return f"{exc.__class__.__name__}: {exc}"


def _read(fn: Callable[[], T]) -> T | str:
    """`fn()`, or an unavailable marker when psutil or the OS refuses."""
    try:
        return fn()
    except (psutil.Error, OSError) as exc:
        return unavailable(_why(exc))


def _mb(value: float) -> float:
    return round(value / MB, 2)


def pressure_level(percent_used: float) -> str:
    """ "normal", "high" (> 85 % used) or "critical" (> 90 %), as the seeds grade memory."""
    if percent_used > MEMORY_CRITICAL_PERCENT:
        return "critical"
    if percent_used > MEMORY_HIGH_PERCENT:
        return "high"
    return "normal"


def _psi_memory() -> dict[str, float] | None:
    """Linux pressure-stall information for memory (% of time stalled), None elsewhere."""
    try:
        text = _PSI_MEMORY.read_text()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for item in rest.split():
            key, _, value = item.partition("=")
            if key in ("avg10", "avg60"):
                try:
                    out[f"{kind}_{key}"] = float(value)
                except ValueError:
                    continue
    return out or None


def memory_info() -> dict[str, Any]:
    """System memory in MB with the seeds' pressure level and Linux PSI when available."""
    vm = psutil.virtual_memory()
    swap = _read(psutil.swap_memory)
    return {
        "total_mb": _mb(vm.total),
        "available_mb": _mb(vm.available),
        "used_mb": _mb(vm.total - vm.available),
        "percent": vm.percent,
        "swap_percent": swap if isinstance(swap, str) else swap.percent,
        "pressure": pressure_level(vm.percent),
        "psi": _psi_memory(),
    }


def _load_avg() -> list[float] | str:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return unavailable("no load average on this platform")


def _disk(path: str = "/") -> dict[str, Any] | str:
    usage = _read(lambda: psutil.disk_usage(path))
    if isinstance(usage, str):
        return usage
    return {"path": path, "percent": usage.percent, "free_mb": _mb(usage.free)}


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _connections(proc: psutil.Process) -> list[Any]:
    return list(proc.net_connections(kind="inet"))


def _listening_ports(conns: list[Any]) -> list[int]:
    return sorted({c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr})


def _count_by_status(conns: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for conn in conns:
        out[conn.status] = out.get(conn.status, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class _ProcessStart:
    proc: psutil.Process
    cpu_s: float | str
    rss: int | str
    at: float
    rss_peak: int = 0


@dataclass
class HostWindow:
    """CPU and memory evidence measured between `start()` and `finish()`.

    `sample()` may be called in between to catch the target process's peak RSS. The system CPU
    and every per-process CPU figure are averages over the window (100 % = one core busy).
    """

    pid: int | None = None
    top: int = 5
    _t0: float = 0.0
    _sys_cpu: Any = None
    _procs_cpu: dict[int, float] = field(default_factory=dict)
    _target: _ProcessStart | str | None = None

    def start(self) -> None:
        """Take the opening readings."""
        self._t0 = time.monotonic()
        self._sys_cpu = psutil.cpu_times()
        self._procs_cpu = {}
        for proc in psutil.process_iter():
            try:
                self._procs_cpu[proc.pid] = _cpu_seconds(proc)
            except psutil.Error:
                continue
        if self.pid is not None:
            self._target = self._open_target(self.pid)

    def _open_target(self, pid: int) -> _ProcessStart | str:
        try:
            proc = psutil.Process(pid)
            rss = proc.memory_info().rss
        except psutil.NoSuchProcess:
            return unavailable(f"no process with pid {pid}")
        except psutil.Error as exc:
            return unavailable(_why(exc))
        return _ProcessStart(proc, _read(lambda: _cpu_seconds(proc)), rss, time.monotonic(), rss)

    def sample(self) -> None:
        """An intermediate RSS reading of the target process (for its peak)."""
        target = self._target
        if isinstance(target, _ProcessStart):
            rss = _read(lambda: target.proc.memory_info().rss)
            if isinstance(rss, int) and rss > target.rss_peak:
                target.rss_peak = rss

    def finish(self) -> dict[str, Any]:
        """Close the window and return the snapshot (see `host_snapshot`)."""
        window = max(time.monotonic() - self._t0, 1e-6)
        cpus = psutil.cpu_count() or 1
        if self._sys_cpu is None:
            raise RuntimeError("HostWindow.finish() called before start()")
        sys_cpu = round(_cpu_busy(self._sys_cpu, psutil.cpu_times()), 1)
        top_cpu, top_memory = self._top_processes(window)
        snapshot: dict[str, Any] = {
            "taken_at": datetime.now(UTC).isoformat(),
            "window_s": round(window, 3),
            "cpu_count": cpus,
            "cpu_percent": sys_cpu,
            "load_avg": _load_avg(),
            "memory": memory_info(),
            "disk": _disk(),
            "process": None,
            "top_cpu": top_cpu,
            "top_memory": top_memory,
        }
        if self.pid is not None:
            target = self._target if self._target is not None else self._open_target(self.pid)
            snapshot["process"] = target if isinstance(target, str) else _describe(target)
        snapshot["findings"] = findings(snapshot)
        return snapshot

    def _top_processes(self, window: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        attrs = ["pid", "name", "memory_info", "memory_percent", "cpu_times", "create_time"]
        for proc in psutil.process_iter(attrs):
            info = proc.info
            times, mem = info.get("cpu_times"), info.get("memory_info")
            if times is None or mem is None:
                continue
            now_s = float(times.user + times.system)
            before = self._procs_cpu.get(proc.pid, 0.0)
            rows.append(
                {
                    "pid": proc.pid,
                    "name": info.get("name") or "?",
                    "cpu_percent": round(max(now_s - before, 0.0) / window * 100.0, 1),
                    "rss_mb": _mb(mem.rss),
                    "memory_percent": round(float(info.get("memory_percent") or 0.0), 2),
                }
            )
        by_cpu = sorted(rows, key=lambda r: (-r["cpu_percent"], -r["rss_mb"]))[: self.top]
        by_mem = sorted(rows, key=lambda r: -r["rss_mb"])[: self.top]
        return by_cpu, by_mem


def _cpu_busy(before: Any, after: Any) -> float:
    """System CPU % busy between two `psutil.cpu_times()` readings (all cores = 100 %)."""

    def delta(name: str) -> float:
        return float(getattr(after, name, 0.0)) - float(getattr(before, name, 0.0))

    # Linux counts guest time inside user/nice too: leave it out of the total, as psutil does.
    total = float(sum(after)) - float(sum(before)) - delta("guest") - delta("guest_nice")
    if total <= 0:
        return 0.0
    idle = delta("idle") + delta("iowait")
    return max(0.0, min(100.0, (total - idle) / total * 100.0))


def _describe(start: _ProcessStart) -> dict[str, Any] | str:
    proc = start.proc
    try:
        with proc.oneshot():
            name = proc.name()
            mem = proc.memory_info()
            threads = proc.num_threads()
            status = proc.status()
            created = proc.create_time()
    except psutil.Error as exc:
        return unavailable(_why(exc))
    elapsed = max(time.monotonic() - start.at, 1e-6)
    cpu_now = _read(lambda: _cpu_seconds(proc))
    cpu_percent: float | str
    if isinstance(cpu_now, float) and isinstance(start.cpu_s, float):
        cpu_percent = round(max(cpu_now - start.cpu_s, 0.0) / elapsed * 100.0, 1)
    else:
        cpu_percent = cpu_now if isinstance(cpu_now, str) else str(start.cpu_s)
    conns = _read(lambda: _connections(proc))
    open_files = _read(lambda: len(proc.open_files()))
    fds = _read(proc.num_fds) if hasattr(proc, "num_fds") else unavailable("not on this OS")
    growth: float | str = unavailable("no opening reading")
    rate: float | str = growth
    if isinstance(start.rss, int):
        growth = _mb(mem.rss - start.rss)
        rate = (
            round(growth / elapsed * 60.0, 2)
            if elapsed >= MIN_RATE_WINDOW_S
            else unavailable(f"window shorter than {MIN_RATE_WINDOW_S:g} s")
        )
    return {
        "pid": proc.pid,
        "name": name,
        "status": status,
        "uptime_s": round(time.time() - created, 1),
        "cpu_percent": cpu_percent,
        "rss_mb": _mb(mem.rss),
        "rss_start_mb": _mb(start.rss) if isinstance(start.rss, int) else start.rss,
        "rss_peak_mb": _mb(max(start.rss_peak, mem.rss)),
        "rss_growth_mb": growth,
        "rss_growth_mb_per_min": rate,
        "threads": threads,
        "open_files": open_files,
        "fds": fds,
        "connections": conns if isinstance(conns, str) else len(conns),
        "connections_by_status": conns if isinstance(conns, str) else _count_by_status(conns),
        "listening_ports": conns if isinstance(conns, str) else _listening_ports(conns),
    }


def findings(snapshot: dict[str, Any]) -> list[str]:
    """One sentence per resource figure beyond the seeds' thresholds (empty when all fine)."""
    out: list[str] = []
    cpu = snapshot.get("cpu_percent")
    if isinstance(cpu, float | int):
        if cpu > CPU_CRITICAL_PERCENT:
            out.append(f"system CPU {cpu:.0f}% busy (> {CPU_CRITICAL_PERCENT:.0f}%: saturated)")
        elif cpu > CPU_HIGH_PERCENT:
            out.append(f"system CPU {cpu:.0f}% busy (> {CPU_HIGH_PERCENT:.0f}%: high)")
    memory = snapshot.get("memory") or {}
    if memory.get("pressure") in ("high", "critical"):
        out.append(
            f"memory {memory['percent']:.0f}% used, {memory['available_mb']:.0f} MB available "
            f"({memory['pressure']} pressure)"
        )
    load = snapshot.get("load_avg")
    cpus = snapshot.get("cpu_count") or 1
    if isinstance(load, list) and load and load[0] > cpus:
        out.append(f"1-minute load average {load[0]:.2f} exceeds the {cpus} CPUs")
    proc = snapshot.get("process")
    if isinstance(proc, dict):
        rss = proc.get("rss_mb")
        if isinstance(rss, float | int) and rss > PROCESS_RSS_LIMIT_MB:
            out.append(
                f"process {proc['pid']} uses {rss:.0f} MB RSS (> {PROCESS_RSS_LIMIT_MB:.0f})"
            )
        growth = proc.get("rss_growth_mb")
        if isinstance(growth, float | int) and growth > RSS_GROWTH_LEAK_MB:
            out.append(
                f"process {proc['pid']} RSS grew {growth:.0f} MB during the probes "
                f"(> {RSS_GROWTH_LEAK_MB:.0f} MB: possible leak)"
            )
        pcpu = proc.get("cpu_percent")
        if isinstance(pcpu, float | int) and pcpu > CPU_CRITICAL_PERCENT:
            out.append(f"process {proc['pid']} used {pcpu:.0f}% CPU (one core = 100%)")
    return out


def host_snapshot(pid: int | None = None, *, top: int = 5, interval: float = 0.2) -> dict[str, Any]:
    """A JSON-ready resource snapshot; CPU figures are measured over `interval` seconds.

    Keys: taken_at, window_s, cpu_count, cpu_percent, load_avg, memory {total_mb, available_mb,
    used_mb, percent, swap_percent, pressure, psi}, disk, process (None without `pid`; else
    {pid, name, status, uptime_s, cpu_percent, rss_mb, rss_start_mb, rss_peak_mb, rss_growth_mb,
    rss_growth_mb_per_min, threads, open_files, fds, connections, connections_by_status,
    listening_ports}), top_cpu, top_memory and findings. Never raises for a missing or
    forbidden process: the field says "unavailable: <reason>". Blocks for `interval` seconds.
    """
    window = HostWindow(pid, top)
    window.start()
    if interval > 0:
        time.sleep(interval)
    return window.finish()


def pid_listening_on(port: int) -> int | None:
    """The local process listening on 127.0.0.1/::1/0.0.0.0/:: at `port`, None if unknown."""
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.Error:
        conns = []
    for conn in conns:
        if _is_local_listener(conn, port) and conn.pid is not None:
            return int(conn.pid)
    # Without rights to the system-wide table, look through the processes we may inspect.
    for proc in psutil.process_iter():
        try:
            if any(_is_local_listener(c, port) for c in proc.net_connections(kind="inet")):
                return proc.pid
        except psutil.Error:
            continue
    return None


def _is_local_listener(conn: Any, port: int) -> bool:
    if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
        return False
    ip = str(conn.laddr.ip)
    return ip in LOCAL_LISTEN_ADDRESSES or ip.startswith("127.")
