"""The guard's own process figures: RSS, CPU, threads, open files, event-loop lag, GC.

So a service that is not on the machine running crisisctl (remote, in a container, another
user's) still gives triage and validate resource evidence: its guard reports them in
``<prefix>/status`` (under ``process``) and as ``crisisctl_guard_process_*`` gauges.

Cost is bounded and off the request path:

* the ticker tells `ProcessFigures.tick` how late each tick fired (one subtraction and one
  append into a ring of the last `LAG_TICKS` lateness values): that is the event-loop lag;
* at most once a second (`SAMPLE_EVERY_S`) the ticker, or a status read finding no sample
  yet, takes a sample: psutil's reads of /proc for this process (RSS, CPU times, threads,
  fds) and `gc.get_count()` / `gc.get_stats()`, plus the lag ring's max and p99 — about a
  tenth of a millisecond (`benchmarks/control_cost.py` measures it).

A read (`describe`, `gauges`) returns the last sample: never a /proc read per request.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections import deque
from typing import Any, Final

import psutil

#: the shortest time between two samples (seconds)
SAMPLE_EVERY_S: Final = 1.0
#: the lateness of the last this many ticks makes the "recent" event-loop lag
LAG_TICKS: Final = 512


class ProcessFigures:
    """The last sample of this process's figures, and the ticker's lateness ring."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._proc: psutil.Process | None = None
        #: lateness of the last `LAG_TICKS` ticks (seconds), newest last
        self.lags: deque[float] = deque(maxlen=LAG_TICKS)
        self.ticks = 0
        #: when the last sample was taken (monotonic), -inf before the first
        self.sampled_at = -math.inf
        self._cpu_at: tuple[float, float] | None = None  # (monotonic, user+system s)
        self.sample: dict[str, Any] = {}
        #: seconds of the loop's thread the samples took, in all (the cost, for benchmarks)
        self.sample_cost_s = 0.0
        self.samples = 0

    # -- the ticker's side -----------------------------------------------------------------
    def tick(self, now: float, late_s: float) -> None:
        """One tick fired `late_s` seconds after it was due; sample if a second has passed."""
        self.lags.append(late_s if late_s > 0.0 else 0.0)
        self.ticks += 1
        if now - self.sampled_at >= SAMPLE_EVERY_S:
            self.take(now)

    def take(self, now: float) -> None:
        """Take a sample now (see the module docstring for what it reads)."""
        started = time.thread_time()
        self.sampled_at = now
        sample: dict[str, Any] = {"pid": self.pid}
        try:
            proc = self._proc
            if proc is None:
                proc = self._proc = psutil.Process(self.pid)
            with proc.oneshot():
                rss = proc.memory_info().rss
                cpu = proc.cpu_times()
                threads = proc.num_threads()
                fds: int | None = proc.num_fds() if hasattr(proc, "num_fds") else None
        except (psutil.Error, OSError) as exc:
            sample["error"] = f"psutil could not read this process: {type(exc).__name__}"
        else:
            used = cpu.user + cpu.system
            percent: float | None = None
            if self._cpu_at is not None and now > self._cpu_at[0]:
                percent = round((used - self._cpu_at[1]) / (now - self._cpu_at[0]) * 100.0, 1)
            self._cpu_at = (now, used)
            sample.update(
                rss_bytes=rss,
                rss_mb=round(rss / 1_048_576, 1),
                cpu_user_s=round(cpu.user, 3),
                cpu_system_s=round(cpu.system, 3),
                cpu_percent_recent=percent,
                threads=threads,
                open_fds=fds,
            )
        lags = sorted(self.lags)
        sample["loop_lag_ms"] = {
            "recent_max": round(lags[-1] * 1000.0, 3) if lags else None,
            "recent_p99": round(lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)]
                                * 1000.0, 3) if lags else None,
            "ticks": len(lags),
        }  # fmt: skip
        sample["gc"] = {
            "counts": list(gc.get_count()),
            "collections": [int(g.get("collections", 0)) for g in gc.get_stats()],
        }
        self.sample = sample
        self.samples += 1
        self.sample_cost_s += time.thread_time() - started

    # -- readers ---------------------------------------------------------------------------
    def describe(self, now: float) -> dict[str, Any]:
        """The status document's ``process`` section: the last sample (taking one if there is
        none yet, e.g. before the ticker first ran) and its age."""
        if not self.sample:
            self.take(now)
        return {
            **self.sample,
            "sample_age_s": round(max(0.0, now - self.sampled_at), 3),
            "sampled_every_s": SAMPLE_EVERY_S,
        }

    def gauges(self) -> list[tuple[str, str, float, dict[str, str]]]:
        """(name, help, value, labels) of the ``crisisctl_guard_process_*`` gauges, from the
        last sample (none before the first)."""
        s = self.sample
        out: list[tuple[str, str, float, dict[str, str]]] = []

        def add(name: str, doc: str, value: Any, labels: dict[str, str] | None = None) -> None:
            if isinstance(value, int | float):
                out.append((f"crisisctl_guard_process_{name}", doc, float(value), labels or {}))

        add("rss_bytes", "Resident memory of the guarded process (bytes).", s.get("rss_bytes"))
        add("cpu_user_seconds", "User CPU time of the guarded process.", s.get("cpu_user_s"))
        add("cpu_system_seconds", "System CPU time of the guarded process.", s.get("cpu_system_s"))
        add("cpu_percent", "CPU of the guarded process over the last sample interval "
            "(100 = one core).", s.get("cpu_percent_recent"))  # fmt: skip
        add("threads", "Threads of the guarded process.", s.get("threads"))
        add("open_fds", "Open file descriptors of the guarded process.", s.get("open_fds"))
        lag = s.get("loop_lag_ms") or {}
        for key in ("recent_max", "recent_p99"):
            value = lag.get(key)
            add(f"loop_lag_{key.split('_')[1]}_seconds",
                f"Event-loop lag, {key.split('_')[1]} of the guard ticker's last ticks.",
                value / 1000.0 if isinstance(value, int | float) else None)  # fmt: skip
        collections = (s.get("gc") or {}).get("collections") or []
        for generation, n in enumerate(collections):
            add("gc_collections", "Garbage collections of the guarded process, by generation.",
                n, {"generation": str(generation)})  # fmt: skip
        return out
