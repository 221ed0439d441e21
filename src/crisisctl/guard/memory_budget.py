"""The guard's memory budget: RSS sampled on every tick, cleanup past the soft budget, shedding
of low-priority routes past the hard budget (configured by `MemoryBudgetConfig`).

The states, with hysteresis (`BudgetState.observe`, pure: no I/O, no clock of its own):

    rss ≥ hard                          shedding starts: routes of priority ≤ shed_priority
                                        get 503 + Retry-After (the emergency mode's shedding)
    shedding and rss < soft             shedding stops
    rss ≥ soft, no cleanup running,     a cleanup round starts
    cooldown_s since the last one

Budgets in force are the configured ones times `emergency_factor` in emergency mode.

A cleanup round (`MemoryBudget.cleanup`) runs as a task of its own on the event loop, never in
the request path: each hook in turn (the configured ones, then those added with
`on_pressure`, then the periodic ones of `every`: guard/periodic.py), then ``gc.collect()``
and glibc's ``malloc_trim(0)`` (which hands freed heap
pages back to the system: without it RSS often stays high after Python freed the memory). An
async hook is cancelled after `hook_timeout_s`; a sync hook runs on the event loop and cannot
be interrupted, so one running longer is counted as over time. A hook that raises is logged
and counted, never fatal. RSS before and after the round, what each hook took, and every
transition are kept for the status document, the metrics and the log.

RSS comes from ``/proc/self/statm`` (one ``pread`` of a kept descriptor: about 5 µs), or
psutil where there is no /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crisisctl.guard.config_base import Priority
from crisisctl.guard.health_config import MAX_HOOKS, MemoryBudgetConfig
from crisisctl.guard.modes import EMERGENCY, utc_iso
from crisisctl.guard.periodic import PeriodicHooks

log = logging.getLogger("crisisctl.guard")

MIB: Final = 1_048_576
#: what the status calls each state (and the metric's value: its index)
STATES: Final = ("ok", "soft", "hard")


class RssReader:
    """This process's resident set size in bytes: /proc/self/statm, else psutil."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc: psutil.Process | None = None

    def __call__(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:  # (a forked child reopens its own)
            self._pid = pid
            try:
                self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                self._fd = None
        if self._fd is not None:
            try:
                return int(os.pread(self._fd, 128, 0).split()[1]) * self._page
            except (OSError, ValueError, IndexError):
                self._fd = None
        if self._proc is None:
            self._proc = psutil.Process(pid)
        return int(self._proc.memory_info().rss)


class BudgetState:
    """The budget's state machine (see the module docstring): shedding on/off, cleanup due."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.shedding = False
        self.above_soft = False
        #: when the last cleanup round started (monotonic), None before the first
        self.last_cleanup: float | None = None
        self.cleaning = False
        self.soft_crossings = 0
        self.hard_crossings = 0

    def observe(self, now: float, rss: int, soft: float, hard: float | None) -> list[str]:
        """Take one RSS sample against the budgets in force (bytes); returns what happened, in
        order, among "soft_crossed", "soft_cleared", "shedding_on", "shedding_off" and
        "cleanup" (a cleanup round is due: the caller starts it and calls `cleaned` after)."""
        events: list[str] = []
        if rss >= soft:
            if not self.above_soft:
                self.above_soft = True
                self.soft_crossings += 1
                events.append("soft_crossed")
        elif self.above_soft:
            self.above_soft = False
            events.append("soft_cleared")
        if hard is not None and rss >= hard:
            if not self.shedding:
                self.shedding = True
                self.hard_crossings += 1
                events.append("shedding_on")
        elif self.shedding and rss < soft:
            self.shedding = False
            events.append("shedding_off")
        if (
            self.above_soft
            and not self.cleaning
            and (self.last_cleanup is None or now - self.last_cleanup >= self.cooldown_s)
        ):
            self.cleaning = True
            self.last_cleanup = now
            events.append("cleanup")
        return events

    def cleaned(self) -> None:
        """The cleanup round has ended."""
        self.cleaning = False


class HookStats:
    """What one cleanup hook did."""

    __slots__ = ("failures", "last_error", "last_ms", "name", "over_time", "runs")

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0
        self.failures = 0
        self.over_time = 0
        self.last_ms: float | None = None
        #: the last failure's kind (the exception's class, or "timeout"; never its message,
        #: which may hold a secret: the log has the traceback), None after a good round
        self.last_error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "runs": self.runs, "failures": self.failures,
                "over_time": self.over_time, "last_ms": self.last_ms,
                "last_error": self.last_error}  # fmt: skip


def _hook_name(fn: Callable[[], Any], taken: set[str]) -> str:
    base = getattr(fn, "__qualname__", None) or type(fn).__name__
    name, n = base, 2
    while name in taken:
        name, n = f"{base}#{n}", n + 1
    return name


def _collect() -> None:
    gc.collect()


_malloc_trim: Callable[[int], int] | None = None


def _trim() -> None:
    """glibc's malloc_trim(0): return the free heap pages to the system (Linux/glibc only)."""
    global _malloc_trim
    if _malloc_trim is None:
        path = ctypes.util.find_library("c")
        fn: Any = getattr(ctypes.CDLL(path), "malloc_trim", None) if path else None
        _malloc_trim = fn if fn is not None else (lambda pad: 0)
    _malloc_trim(0)


class MemoryBudget:
    """One guard's memory budget: fed by the ticker (`tick`), read by status and metrics."""

    def __init__(
        self,
        config: MemoryBudgetConfig,
        mode: Callable[[], str],
        set_shedding: Callable[[int], None],
        rss: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self._mode = mode
        #: tells the request path the priority it sheds at for memory (-1: none)
        self._set_shedding = set_shedding
        self._rss = rss or RssReader()
        self.state = BudgetState(config.cooldown_s)
        self._hooks: list[tuple[Callable[[], Any], HookStats]] = []
        for hook in config.hooks:
            self.on_pressure(hook)
        self._builtins: list[tuple[Callable[[], Any], HookStats]] = []
        if config.collect:
            self._builtins.append((_collect, HookStats("gc.collect")))
        if config.trim and os.path.exists("/proc/self/statm"):
            self._builtins.append((_trim, HookStats("malloc_trim")))
        self.rss_bytes: int | None = None
        self.sampled_at: float | None = None
        self.cleanups = 0
        self.freed_bytes = 0
        self.last_cleanup: dict[str, Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        #: the periodic cleanup hooks (`every`), run on the ticker with or without a budget
        self.periodic = PeriodicHooks(self._run, lambda fn, taken: HookStats(_hook_name(fn, taken)))
        self.every = self.periodic.every

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def hooks(self) -> tuple[Callable[[], Any], ...]:
        """The cleanup hooks registered, in the order they run (before the built-ins)."""
        return tuple(fn for fn, _ in self._hooks)

    def on_pressure(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Add a cleanup hook (sync or async, no arguments) run past the soft budget; returns
        `fn`, so it also works as a decorator. (`every(period_s, fn)`: one that also runs
        every `period_s` seconds, budget or not: guard/periodic.py.)"""
        if not callable(fn):
            raise TypeError("on_pressure() needs a callable taking no arguments")
        if len(self._hooks) >= MAX_HOOKS:
            raise ValueError(f"at most {MAX_HOOKS} memory hooks per guard")
        taken = {stats.name for _, stats in self._hooks}
        self._hooks.append((fn, HookStats(_hook_name(fn, taken))))
        return fn

    def budgets(self) -> tuple[float, float | None]:
        """(soft, hard) in force now, in bytes (emergency mode lowers both)."""
        cfg = self.config
        factor = cfg.emergency_factor if self._mode() == EMERGENCY else 1.0
        soft = (cfg.soft_mb or 0.0) * MIB * factor
        return soft, (None if cfg.hard_mb is None else cfg.hard_mb * MIB * factor)

    # -- the ticker's side -----------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Start the periodic hooks due, sample RSS and act on the budget (call from the event
        loop's thread)."""
        if self.periodic.hooks:
            self.periodic.tick(now)
        if not self.config.enabled:
            return
        rss = self._rss()
        self.rss_bytes = rss
        self.sampled_at = now
        soft, hard = self.budgets()
        for event in self.state.observe(now, rss, soft, hard):
            self._on(event, rss, soft, hard)

    def _on(self, event: str, rss: int, soft: float, hard: float | None) -> None:
        shed = Priority.parse(self.config.shed_priority)
        if event == "soft_crossed":
            log.warning("memory over the soft budget: RSS %.1f MiB ≥ %.1f MiB; running cleanup "
                        "hooks", rss / MIB, soft / MIB)  # fmt: skip
        elif event == "soft_cleared":
            log.info("memory back under the soft budget: RSS %.1f MiB < %.1f MiB",
                     rss / MIB, soft / MIB)  # fmt: skip
        elif event == "shedding_on":
            self._set_shedding(int(shed))
            log.warning("memory over the hard budget: RSS %.1f MiB ≥ %.1f MiB; shedding routes "
                        "of priority %s and below (503) until RSS < %.1f MiB", rss / MIB,
                        (hard or 0.0) / MIB, shed.name.lower(), soft / MIB)  # fmt: skip
        elif event == "shedding_off":
            self._set_shedding(-1)
            log.warning("memory back under the soft budget: RSS %.1f MiB < %.1f MiB; shedding "
                        "stopped", rss / MIB, soft / MIB)  # fmt: skip
        elif event == "cleanup":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.state.cleaned()
                return
            self._task = loop.create_task(self.cleanup(rss), name="crisisctl-memory-cleanup")

    async def cleanup(self, rss_before: int | None = None) -> dict[str, Any]:
        """Run one cleanup round now (every hook, then the built-ins) and return its record."""
        started = time.monotonic()
        before = self._rss() if rss_before is None else rss_before
        failed: list[str] = []
        try:
            for fn, stats in self._hooks:
                if not await self._run(fn, stats):
                    failed.append(stats.name)
            for hook in list(self.periodic.hooks):  # (one running on its own is left alone)
                if await self.periodic.run(hook) is False:
                    failed.append(hook.stats.name)
            for fn, stats in self._builtins:
                if not await self._run(fn, stats):
                    failed.append(stats.name)
            after = self._rss()
        finally:
            self.state.cleaned()
        self.cleanups += 1
        self.freed_bytes += max(0, before - after)
        self.rss_bytes = after
        record: dict[str, Any] = {
            "at": utc_iso(time.time()),
            "rss_before_mb": round(before / MIB, 1),
            "rss_after_mb": round(after / MIB, 1),
            "freed_mb": round((before - after) / MIB, 1),
            "duration_ms": round((time.monotonic() - started) * 1000.0, 3),
            "hooks_run": len(self._hooks) + len(self.periodic.hooks) + len(self._builtins),
            "failed": failed,
        }
        self.last_cleanup = record
        log.warning("memory cleanup: %d hooks in %.0f ms, RSS %.1f -> %.1f MiB%s",
                    record["hooks_run"], record["duration_ms"], before / MIB, after / MIB,
                    f"; failed: {', '.join(failed)}" if failed else "")  # fmt: skip
        return record

    async def _run(self, fn: Callable[[], Any], stats: HookStats) -> bool:
        timeout = self.config.hook_timeout_s
        started = time.monotonic()
        stats.runs += 1
        ok = True
        try:
            result = fn()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, timeout)
        except TimeoutError:
            ok = False
            stats.failures += 1
            stats.over_time += 1
            stats.last_error = "timeout"
            log.warning("memory cleanup hook %s did not finish within %.1f s and was cancelled",
                        stats.name, timeout)  # fmt: skip
        except Exception as exc:
            ok = False
            stats.failures += 1
            stats.last_error = type(exc).__name__
            if stats.failures <= 5 or stats.failures % 100 == 0:
                log.exception("memory cleanup hook %s failed; the others still run", stats.name)
        if ok:
            stats.last_error = None
        elapsed = time.monotonic() - started
        stats.last_ms = round(elapsed * 1000.0, 3)
        if ok and elapsed > timeout:
            stats.over_time += 1  # a sync hook: it blocked the event loop that long
            log.warning("memory cleanup hook %s blocked the event loop %.0f ms (over its %.1f s)",
                        stats.name, elapsed * 1000.0, timeout)  # fmt: skip
        return ok

    async def aclose(self) -> None:
        """Cancel a cleanup round still running, and the periodic hooks' rounds."""
        await self.periodic.aclose()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- readers ---------------------------------------------------------------------------
    def describe(self, now: float) -> dict[str, Any]:
        """The status document's ``memory`` section."""
        cfg = self.config
        periodic = {"periodic": self.periodic.describe()} if self.periodic.hooks else {}
        if not cfg.enabled:
            return {"enabled": False, **periodic}
        soft, hard = self.budgets()
        state = self.state
        rss = self.rss_bytes
        return {
            **periodic,
            "enabled": True,
            "state": STATES[self.level()],
            "rss_mb": None if rss is None else round(rss / MIB, 1),
            "sample_age_s": None if self.sampled_at is None else round(now - self.sampled_at, 3),
            "soft_mb": round(soft / MIB, 1),
            "hard_mb": None if hard is None else round(hard / MIB, 1),
            "emergency_factor": cfg.emergency_factor,
            "shedding": state.shedding,
            "shed_priority": Priority.parse(cfg.shed_priority).name.lower(),
            "soft_crossings": state.soft_crossings,
            "hard_crossings": state.hard_crossings,
            "cleanups": self.cleanups,
            "cleaning": state.cleaning,
            "cooldown_s": cfg.cooldown_s,
            "freed_mb_total": round(self.freed_bytes / MIB, 1),
            "last_cleanup": self.last_cleanup,
            "hooks": [stats.describe() for _, stats in [*self._hooks, *self._builtins]],
        }

    def level(self) -> int:
        """0 under the soft budget, 1 over it, 2 shedding."""
        return 2 if self.state.shedding else 1 if self.state.above_soft else 0

    def metrics(self) -> Iterator[Metric]:
        """The ``crisisctl_guard_memory_*`` families (only the periodic hooks' while there is no
        budget)."""
        yield from self.periodic.metrics()
        if not self.config.enabled:
            return
        soft, hard = self.budgets()
        budget = GaugeMetricFamily(
            "crisisctl_guard_memory_budget_bytes",
            "Memory budget in force (RSS), by level.",
            labels=["level"],
        )
        budget.add_metric(["soft"], soft)
        if hard is not None:
            budget.add_metric(["hard"], hard)
        yield budget
        if self.rss_bytes is not None:
            yield GaugeMetricFamily(
                "crisisctl_guard_memory_rss_bytes",
                "RSS at the budget's last sample.",
                value=self.rss_bytes,
            )
        yield GaugeMetricFamily("crisisctl_guard_memory_state",
                                "0 under the soft budget, 1 over it, 2 over the hard budget "
                                "(shedding).", value=self.level())  # fmt: skip
        yield GaugeMetricFamily("crisisctl_guard_memory_shedding",
                                "1 while low-priority routes are shed for memory.",
                                value=1.0 if self.state.shedding else 0.0)  # fmt: skip
        crossings = CounterMetricFamily("crisisctl_guard_memory_budget_crossings",
                                        "Times RSS went over a budget, by level.",
                                        labels=["level"])  # fmt: skip
        crossings.add_metric(["soft"], self.state.soft_crossings)
        crossings.add_metric(["hard"], self.state.hard_crossings)
        yield crossings
        yield CounterMetricFamily(
            "crisisctl_guard_memory_cleanups",
            "Cleanup rounds run past the soft budget.",
            value=self.cleanups,
        )
        yield CounterMetricFamily("crisisctl_guard_memory_freed_bytes",
                                  "RSS given back by cleanup rounds (before - after, summed).",
                                  value=self.freed_bytes)  # fmt: skip
        failures = CounterMetricFamily("crisisctl_guard_memory_hook_failures",
                                       "Cleanup hooks that raised or ran out of time, by hook.",
                                       labels=["hook"])  # fmt: skip
        for _, stats in [*self._hooks, *self._builtins]:
            failures.add_metric([stats.name], stats.failures)
        yield failures
