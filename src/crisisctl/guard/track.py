"""`track()` — time custom operations (DB calls, encryption…) into the guard's metrics.

    @track("db.load_client", threshold_ms=200)
    async def load_client(...): ...

    with track("encrypt", threshold_ms=100):
        ...

Durations go into a per-operation latency histogram exposed by every guard's `/metrics` and
`/status`. A call slower than its threshold is a breach, graded like the seeds' alerting:
ratio = duration / threshold, > 5 critical, > 3 high, > 2 medium, otherwise low. Breaches are
counted per grade and logged at most once per operation and grade every 5 minutes (the seeds'
alert cooldown). Operation names are bounded: past 1000 names, new ones fold into "<other>".

Memory delta (off by default): ``track("cache.fill", memory_every=100)`` measures one call in
100 with tracemalloc — the bytes allocated during the call and still alive at its end (what
the call retained). tracemalloc is started for the sampled call only (unless it was already
on), so the other calls pay nothing but one counter; while it runs, every allocation of the
process is traced (several times slower), and other tasks and threads allocating meanwhile
count too: a sample is evidence, not an exact attribution. docs/policies.md gives the cost.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from crisisctl.guard.metrics import histogram_family
from crisisctl.severity import breach_severity
from crisisctl.stats import LatencyHistogram

log = logging.getLogger("crisisctl.guard")

MAX_OPERATIONS = 1000
ALERT_COOLDOWN_S = 300.0
OTHER = "<other>"

P = ParamSpec("P")
R = TypeVar("R")


class OperationStats:
    """What is known about one tracked operation."""

    __slots__ = (
        "breaches", "calls", "errors", "last_alert", "latency", "mem_calls", "mem_max",
        "mem_samples", "mem_sum", "name", "threshold_ms",
    )  # fmt: skip

    def __init__(self, name: str, threshold_ms: float | None) -> None:
        self.name = name
        self.threshold_ms = threshold_ms
        self.latency = LatencyHistogram()
        self.calls = 0
        self.errors = 0
        self.breaches: dict[str, int] = {}
        self.last_alert: dict[str, float] = {}
        #: calls seen by memory sampling, samples taken, their deltas' sum and max (bytes)
        self.mem_calls = 0
        self.mem_samples = 0
        self.mem_sum = 0
        self.mem_max: int | None = None

    def record_memory(self, delta: int) -> None:
        """One sampled call retained `delta` bytes (negative: it freed more than it kept)."""
        self.mem_samples += 1
        self.mem_sum += delta
        if self.mem_max is None or delta > self.mem_max:
            self.mem_max = delta

    def record(self, seconds: float, failed: bool) -> None:
        self.calls += 1
        if failed:
            self.errors += 1
        self.latency.record_us(int(seconds * 1_000_000))
        threshold = self.threshold_ms
        if threshold is not None:
            duration_ms = seconds * 1000.0
            if duration_ms > threshold:
                grade = breach_severity(duration_ms, threshold)
                self.breaches[grade] = self.breaches.get(grade, 0) + 1
                now = time.monotonic()
                last = self.last_alert.get(grade)
                if last is None or now - last >= ALERT_COOLDOWN_S:
                    self.last_alert[grade] = now
                    log.warning(
                        "operation %s took %.1f ms, %.1fx its %.0f ms threshold (%s)",
                        self.name,
                        duration_ms,
                        duration_ms / threshold,
                        threshold,
                        grade,
                    )

    def describe(self) -> dict[str, object]:
        summary = self.latency.summary().as_dict()
        return {
            "operation": self.name,
            "threshold_ms": self.threshold_ms,
            "calls": self.calls,
            "errors": self.errors,
            "breaches": dict(self.breaches),
            "latency_ms": summary,
            "memory": None
            if not self.mem_samples
            else {
                "samples": self.mem_samples,
                "mean_delta_bytes": round(self.mem_sum / self.mem_samples),
                "max_delta_bytes": self.mem_max,
            },
        }


_operations: dict[str, OperationStats] = {}
_lock = threading.Lock()


def operation_stats(name: str, threshold_ms: float | None = None) -> OperationStats:
    """The stats object of `name`, created on first use (bounded)."""
    stats = _operations.get(name)
    if stats is not None:
        if threshold_ms is not None:
            stats.threshold_ms = threshold_ms
        return stats
    with _lock:
        stats = _operations.get(name)
        if stats is None:
            if len(_operations) >= MAX_OPERATIONS:
                name = OTHER
                stats = _operations.get(OTHER)
            if stats is None:
                stats = _operations[name] = OperationStats(name, threshold_ms)
    return stats


def operations() -> list[OperationStats]:
    """Every tracked operation of this process."""
    return list(_operations.values())


def reset_operations() -> None:
    """Forget every tracked operation (tests)."""
    with _lock:
        _operations.clear()


def operation_metrics() -> Iterator[Metric]:
    """Prometheus families for tracked operations."""
    ops = operations()
    yield histogram_family(
        "crisisctl_operation_duration_seconds",
        "Duration of operations timed with crisisctl.track().",
        ["operation"],
        [([op.name], op.latency) for op in ops if op.latency.count],
    )
    errors = CounterMetricFamily(
        "crisisctl_operation_errors",
        "Tracked operations that raised.",
        labels=["operation"],
    )
    breaches = CounterMetricFamily(
        "crisisctl_operation_threshold_breaches",
        "Tracked operations slower than their threshold, by breach grade.",
        labels=["operation", "severity"],
    )
    thresholds = GaugeMetricFamily(
        "crisisctl_operation_threshold_seconds",
        "Threshold of each tracked operation.",
        labels=["operation"],
    )
    for op in ops:
        errors.add_metric([op.name], op.errors)
        for grade, n in op.breaches.items():
            breaches.add_metric([op.name, grade], n)
        if op.threshold_ms is not None:
            thresholds.add_metric([op.name], op.threshold_ms / 1000.0)
    memory = SummaryMetricFamily(
        "crisisctl_operation_memory_delta_bytes",
        "Bytes a sampled call of a tracked operation allocated and kept (track(memory_every=N)).",
        labels=["operation"],
    )
    for op in ops:
        if op.mem_samples:
            memory.add_metric([op.name], op.mem_samples, op.mem_sum)
    yield errors
    yield breaches
    yield thresholds
    yield memory


_tracing_lock = threading.Lock()
#: sampled calls measuring now, and whether tracemalloc was started here (then stopped here)
_tracing = {"users": 0, "ours": 0}


def _memory_begin() -> int:
    """Start measuring (tracemalloc on, unless it already was); the traced bytes now."""
    with _tracing_lock:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            _tracing["ours"] = 1
        _tracing["users"] += 1
    return tracemalloc.get_traced_memory()[0]


def _memory_end(started: int) -> int:
    """Stop measuring; the bytes allocated since `started` and still alive."""
    delta = tracemalloc.get_traced_memory()[0] - started
    with _tracing_lock:
        _tracing["users"] -= 1
        if not _tracing["users"] and _tracing["ours"]:
            _tracing["ours"] = 0
            tracemalloc.stop()
    return delta


class track:
    """Decorator and (async) context manager that times an operation."""

    __slots__ = ("_memory_every", "_starts", "_stats")

    def __init__(
        self, operation: str, threshold_ms: float | None = None, *, memory_every: int = 0
    ) -> None:
        if not operation:
            raise ValueError("track() needs an operation name, e.g. track('db.query')")
        if threshold_ms is not None and threshold_ms <= 0:
            raise ValueError("track() threshold_ms must be a positive number of milliseconds")
        if isinstance(memory_every, bool) or not isinstance(memory_every, int) or memory_every < 0:
            raise ValueError(
                "track() memory_every must be a whole number ≥ 0 (0: off; N: one call in N "
                f"measured), not {memory_every!r}"
            )
        self._stats = operation_stats(operation, threshold_ms)
        self._memory_every = memory_every
        #: entry times (and traced bytes at entry, -1: not sampled) per asyncio task or
        #: thread: one instance may be entered by overlapping requests (``DB = track("db")``
        #: … ``async with DB:``), each timed from its own entry
        self._starts: dict[object, list[tuple[float, int]]] = {}

    @property
    def stats(self) -> OperationStats:
        return self._stats

    @overload
    def __call__(self, func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Callable[P, Any]:
        stats = self._stats
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                traced = self._memory_start()
                start = time.perf_counter()
                failed = True
                try:
                    result = await func(*args, **kwargs)
                    failed = False
                    return result
                finally:
                    stats.record(time.perf_counter() - start, failed)
                    if traced >= 0:
                        stats.record_memory(_memory_end(traced))

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            traced = self._memory_start()
            start = time.perf_counter()
            failed = True
            try:
                result = func(*args, **kwargs)
                failed = False
                return result
            finally:
                stats.record(time.perf_counter() - start, failed)
                if traced >= 0:
                    stats.record_memory(_memory_end(traced))

        return cast(Callable[P, Any], wrapper)

    def _memory_start(self) -> int:
        """The traced bytes now if this call is sampled for memory (tracing started), else -1."""
        every = self._memory_every
        if not every:
            return -1
        stats = self._stats
        stats.mem_calls += 1
        if (stats.mem_calls - 1) % every:
            return -1
        return _memory_begin()

    def __enter__(self) -> track:
        traced = self._memory_start()
        self._starts.setdefault(_owner(), []).append((time.perf_counter(), traced))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner = _owner()
        starts = self._starts[owner]
        start, traced = starts.pop()
        if not starts:
            del self._starts[owner]
        self._stats.record(time.perf_counter() - start, exc_type is not None)
        if traced >= 0:
            self._stats.record_memory(_memory_end(traced))

    async def __aenter__(self) -> track:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _owner() -> object:
    """The asyncio task running this code, else the current thread's id."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop in this thread
        task = None
    return task if task is not None else threading.get_ident()
