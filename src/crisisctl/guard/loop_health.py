"""Event-loop health: the loop's lag from the guard ticker's lateness, thread-pool queue depths,
and lag beyond a threshold fed to the adaptive concurrency limit as overload.

The guard's ticker (guard/ticker.py) sleeps `interval_s` (50 ms by default) and tells `tick`
how late it woke: a callback that holds the loop (a blocking call in an async handler, a long
garbage collection, CPU-bound work) delays every other callback, the ticker's included, by the
time it held it. The lateness of the ticks of the last `window_s` seconds gives the lag's p50,
p99 and max (sorted at read time only; the tick itself is one append and one comparison).

Overload: a tick later than `lag_threshold_s` calls `ConcurrencyLimiter.overload(now, factor)`
with factor = max(0.25, threshold / lag), at most once per `signal_every_s`: the adaptive limit
(every route's, with scope "route") is cut by that factor as a latency window beyond tolerance
would cut it, and the level it came from becomes its ceiling for the hold. A lagging loop
delays every request in it, whatever the latency samples say (at low traffic the limit is
"app-limited" and latency alone never cuts it). A static limit is left alone.

Thread pools, sampled about once a second: the event loop's default executor
(``loop.run_in_executor(None, …)``, ``asyncio.to_thread``), through its private
``_default_executor._work_queue`` where the loop has one (not uvloop's: reported as not
visible); and anyio's default thread limiter, where Starlette and FastAPI run sync endpoints
(``tasks_waiting``: endpoints waiting for a worker thread), once the app has imported it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crisisctl.guard.health_config import LoopHealthConfig
from crisisctl.guard.modes import utc_iso

if TYPE_CHECKING:
    from crisisctl.guard.concurrency import ConcurrencyLimiter

log = logging.getLogger("crisisctl.guard")

#: the deepest cut one lag signal makes (the adaptive limit's own deepest cut)
MIN_FACTOR: Final = 0.25
#: how often the thread pools are looked at (seconds)
POOLS_EVERY_S: Final = 1.0
#: the shortest tick the ticker runs at (bounds the window's sample count)
SHORTEST_TICK_S: Final = 0.005
_MISSING: Final = object()


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q ≤ 1) of a sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def pool_depths(loop: asyncio.AbstractEventLoop | None) -> dict[str, dict[str, Any]]:
    """What can be seen of the thread pools' queues from the event loop's thread."""
    pools: dict[str, dict[str, Any]] = {}
    executor: Any = _MISSING if loop is None else getattr(loop, "_default_executor", _MISSING)
    if executor is _MISSING:
        pools["asyncio_default"] = {
            "visible": False,
            "note": "this event loop (e.g. uvloop) does not expose its default executor",
        }
    elif executor is None:
        pools["asyncio_default"] = {"visible": True, "started": False, "queue_depth": 0}
    else:
        queue = getattr(executor, "_work_queue", None)
        qsize = getattr(queue, "qsize", None)
        if qsize is None:
            pools["asyncio_default"] = {"visible": False, "note": "not a ThreadPoolExecutor"}
        else:
            pools["asyncio_default"] = {
                "visible": True,
                "started": True,
                "queue_depth": int(qsize()),
                "threads": len(getattr(executor, "_threads", ())),
                "max_workers": getattr(executor, "_max_workers", None),
            }
    to_thread: Any = sys.modules.get("anyio.to_thread")
    if to_thread is not None and loop is not None:
        try:
            stats = to_thread.current_default_thread_limiter().statistics()
            pools["anyio"] = {
                "visible": True,
                "queue_depth": int(stats.tasks_waiting),
                "busy": int(stats.borrowed_tokens),
                "capacity": float(stats.total_tokens),
            }
        except Exception:  # (another async library, or anyio changed its insides)
            pools["anyio"] = {"visible": False, "note": "anyio's thread limiter is not readable"}
    return pools


class LoopHealth:
    """Event-loop lag over a recent window, the thread pools, and the overload signal."""

    def __init__(self, config: LoopHealthConfig, concurrency: ConcurrencyLimiter | None) -> None:
        self.config = config
        self._concurrency = concurrency
        #: (monotonic time, lag s) of the ticks of the last window_s, oldest first
        self.samples: deque[tuple[float, float]] = deque(
            maxlen=int(config.window_s / SHORTEST_TICK_S) + 1
        )
        self.ticks = 0
        self.lag_sum_s = 0.0
        self.max_lag_s = 0.0
        self.over_threshold = 0
        self.signals = 0
        self._last_signal = -math.inf
        self.last_signal: dict[str, Any] | None = None
        self.pools: dict[str, dict[str, Any]] = {}
        self._pools_at = -math.inf

    def tick(self, now: float, late_s: float) -> None:
        """One tick of the guard's ticker woke `late_s` seconds after it was due."""
        lag = late_s if late_s > 0.0 else 0.0
        samples = self.samples
        samples.append((now, lag))
        horizon = now - self.config.window_s
        while samples[0][0] < horizon:
            samples.popleft()
        self.ticks += 1
        self.lag_sum_s += lag
        if lag > self.max_lag_s:
            self.max_lag_s = lag
        threshold = self.config.lag_threshold_s
        if threshold is not None and lag > threshold:
            self.over_threshold += 1
            if now - self._last_signal >= self.config.signal_every_s:
                self._signal(now, lag, threshold)
        if now - self._pools_at >= POOLS_EVERY_S:
            self._pools_at = now
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            self.pools = pool_depths(loop)

    def _signal(self, now: float, lag: float, threshold: float) -> None:
        self._last_signal = now
        factor = max(MIN_FACTOR, threshold / lag)
        conc = self._concurrency
        if conc is not None:
            conc.overload(now, factor)
        self.signals += 1
        self.last_signal = {"lag_ms": round(lag * 1000.0, 3), "factor": round(factor, 3)}
        self.last_signal["at"] = utc_iso(time.time())
        log.warning(
            "event loop lagged %.0f ms (threshold %.0f ms): counted as overload%s",
            lag * 1000.0,
            threshold * 1000.0,
            f", adaptive concurrency limit cut by {factor:.2f}" if conc is not None else "",
        )

    # -- readers ---------------------------------------------------------------------------
    def window(self) -> dict[str, Any]:
        """p50, p99 and max of the window's lag (ms), and how many ticks it holds."""
        lags = sorted(lag for _, lag in list(self.samples))
        if not lags:
            return {"p50": None, "p99": None, "max": None, "ticks": 0}
        return {
            "p50": round(percentile(lags, 0.5) * 1000.0, 3),
            "p99": round(percentile(lags, 0.99) * 1000.0, 3),
            "max": round(lags[-1] * 1000.0, 3),
            "ticks": len(lags),
        }

    def describe(self, now: float) -> dict[str, Any]:
        """The status document's ``event_loop`` section."""
        cfg = self.config
        if not cfg.enabled:
            return {"enabled": False, "note": "only the process figures' coarse loop_lag_ms"}
        threshold = cfg.lag_threshold_s
        return {
            "enabled": True,
            "interval_s": cfg.interval_s,
            "window_s": cfg.window_s,
            "lag_ms": self.window(),
            "max_lag_ms_ever": round(self.max_lag_s * 1000.0, 3),
            "lag_threshold_ms": None if threshold is None else round(threshold * 1000.0, 3),
            "over_threshold_ticks": self.over_threshold,
            "overload_signals": self.signals,
            "last_signal": self.last_signal,
            "ticks": self.ticks,
            "thread_pools": self.pools,
        }

    def metrics(self) -> Iterator[Metric]:
        """The ``crisisctl_guard_event_loop_*`` and thread-pool families."""
        if not self.config.enabled:
            return
        window = self.window()
        lag = GaugeMetricFamily(
            "crisisctl_guard_event_loop_lag_seconds",
            f"Event-loop lag over the last {self.config.window_s:g} s, by quantile (1: max).",
            labels=["quantile"],
        )
        for quantile, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
            value = window[key]
            if value is not None:
                lag.add_metric([quantile], value / 1000.0)
        yield lag
        yield CounterMetricFamily(
            "crisisctl_guard_event_loop_ticks", "Ticks of the guard's lag ticker.", value=self.ticks
        )
        yield CounterMetricFamily(
            "crisisctl_guard_event_loop_lag_accumulated_seconds",
            "Event-loop lag summed over every tick.",
            value=self.lag_sum_s,
        )
        yield CounterMetricFamily("crisisctl_guard_event_loop_lag_over_threshold",
                                  "Ticks later than the lag threshold.",
                                  value=self.over_threshold)  # fmt: skip
        yield CounterMetricFamily("crisisctl_guard_event_loop_overload_signals",
                                  "Lag overload signals sent to the adaptive concurrency limit.",
                                  value=self.signals)  # fmt: skip
        depth = GaugeMetricFamily("crisisctl_guard_thread_pool_queue_depth",
                                  "Work waiting for a thread, by pool (where visible).",
                                  labels=["pool"])  # fmt: skip
        for name, pool in self.pools.items():
            if pool.get("visible"):
                depth.add_metric([name], float(pool.get("queue_depth", 0)))
        yield depth
