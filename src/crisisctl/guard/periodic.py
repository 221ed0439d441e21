"""Periodic cleanup hooks of the guard's memory policy: ``guard.memory.every(2.0, fn)``.

A periodic hook (sync or async, no arguments) runs every `period_s` seconds on the guard's
ticker, whether or not a soft budget is set, and ALSO in every cleanup round past the soft
budget (guard/memory_budget.py): it is a cleanup hook like those of ``on_pressure``. Each round
runs as a task on the event loop (never in the ticker's own call, never in a thread) through
the memory budget's hook runner: an async hook is cancelled after `hook_timeout_s`; a sync hook
runs on the event loop and should be short (one running longer is logged as having blocked the
loop and counted as over time). A hook that raises is logged and counted; the others still run.
Never two rounds of the same hook at once: a round due while the last one still runs is
skipped (counted). ``Guard.aclose()`` cancels a round still running.

The app reaches the policy without the guard instance: at startup the guard puts it into the
lifespan state, which servers copy into each request (``memory_of(request).every(...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, overload

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crisisctl.guard.health_config import MAX_HOOKS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from crisisctl.guard.memory_budget import HookStats, MemoryBudget

#: = guard/lifespan.py MEMORY_STATE_KEY
MEMORY_STATE_KEY: Final = "crisisctl_memory"
#: periods allowed, in seconds (the ticker wakes at least once a second)
MIN_PERIOD_S: Final = 0.01
MAX_PERIOD_S: Final = 86_400.0
#: a hook's name (a metric label value) is cut to this many characters
MAX_NAME: Final = 80

Hook = Callable[[], Any]
Runner = Callable[[Hook, "HookStats"], Awaitable[bool]]


class PeriodicHook:
    """One periodic hook: its function, period, figures and the round running (if any)."""

    __slots__ = ("busy", "fn", "next_due", "period_s", "skipped", "stats", "task")

    def __init__(self, fn: Hook, period_s: float, stats: HookStats) -> None:
        self.fn = fn
        self.period_s = period_s
        self.stats = stats
        #: when the next round is due (the ticker's clock), None before the first tick
        self.next_due: float | None = None
        self.busy = False
        self.skipped = 0
        self.task: asyncio.Task[Any] | None = None

    def describe(self) -> dict[str, Any]:
        doc = self.stats.describe()
        doc.update(every_s=self.period_s, running=self.busy, skipped=self.skipped)
        return doc


class PeriodicHooks:
    """The periodic hooks of one memory budget, ticked by the guard's ticker."""

    def __init__(self, run: Runner, new_stats: Callable[[Hook, set[str]], HookStats]) -> None:
        self._run = run
        self._new_stats = new_stats
        self.hooks: list[PeriodicHook] = []
        #: the earliest `next_due` (-inf: a hook has no due time yet)
        self._next_due = math.inf

    @overload
    def every(
        self, period_s: float, fn: None = None, *, name: str | None = None
    ) -> Callable[[Hook], Hook]: ...

    @overload
    def every(self, period_s: float, fn: Hook, *, name: str | None = None) -> Hook: ...

    def every(
        self, period_s: float, fn: Hook | None = None, *, name: str | None = None
    ) -> Hook | Callable[[Hook], Hook]:
        """Run `fn` (sync or async, no arguments) every `period_s` seconds, and past the soft
        budget; returns `fn`. Without `fn`, a decorator: ``@guard.memory.every(2.0)``."""
        if (
            isinstance(period_s, bool)
            or not isinstance(period_s, int | float)
            or not (MIN_PERIOD_S <= period_s <= MAX_PERIOD_S)
        ):
            raise ValueError(f"every() needs a period between {MIN_PERIOD_S} and "
                             f"{MAX_PERIOD_S:g} seconds, not {period_s!r}")  # fmt: skip
        if fn is None:

            def decorate(f: Hook) -> Hook:
                return self.every(period_s, f, name=name)

            return decorate
        if not callable(fn):
            raise TypeError("every() needs a callable taking no arguments (sync or async)")
        if len(self.hooks) >= MAX_HOOKS:
            raise ValueError(f"at most {MAX_HOOKS} periodic memory hooks per guard")
        taken = {hook.stats.name for hook in self.hooks}
        stats = self._new_stats(fn, taken)
        base = (stats.name if name is None else str(name))[-MAX_NAME:]  # (the tail says most)
        stats.name, n = base, 2
        while stats.name in taken:
            stats.name, n = f"{base}#{n}", n + 1
        self.hooks.append(PeriodicHook(fn, float(period_s), stats))
        self._next_due = -math.inf
        return fn

    def tick(self, now: float) -> None:
        """Start the rounds due at `now` (call from the event loop's thread)."""
        if now < self._next_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for hook in self.hooks:
            if hook.next_due is None:
                hook.next_due = now + hook.period_s
            elif now >= hook.next_due:
                hook.next_due = now + hook.period_s  # (a late tick shifts it: no bursts)
                if hook.busy:
                    hook.skipped += 1
                    continue
                hook.task = loop.create_task(
                    self.run(hook), name=f"crisisctl-memory-every-{hook.stats.name}"
                )
        self._next_due = min(h.next_due for h in self.hooks if h.next_due is not None)

    async def run(self, hook: PeriodicHook) -> bool | None:
        """One round of `hook` now: True when it went well, None when a round was running."""
        if hook.busy:
            hook.skipped += 1
            return None
        hook.busy = True
        try:
            return await self._run(hook.fn, hook.stats)
        finally:
            hook.busy = False

    async def aclose(self) -> None:
        """Cancel the rounds still running and wait for them."""
        tasks = [hook.task for hook in self.hooks if hook.task is not None]
        for hook in self.hooks:
            hook.task = None
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def describe(self) -> list[dict[str, Any]]:
        """Each hook: name, period, runs, failures, last duration and error, running."""
        return [hook.describe() for hook in self.hooks]

    def metrics(self) -> Iterator[Metric]:
        """The ``crisisctl_guard_memory_periodic_*`` families (none without periodic hooks)."""
        if not self.hooks:
            return
        runs = CounterMetricFamily("crisisctl_guard_memory_periodic_runs",
                                   "Rounds of each periodic cleanup hook.",
                                   labels=["hook"])  # fmt: skip
        failures = CounterMetricFamily("crisisctl_guard_memory_periodic_failures",
                                       "Periodic cleanup hook rounds that raised or ran out of "
                                       "time.", labels=["hook"])  # fmt: skip
        last = GaugeMetricFamily("crisisctl_guard_memory_periodic_last_seconds",
                                 "How long each periodic cleanup hook's last round took.",
                                 labels=["hook"])  # fmt: skip
        for hook in self.hooks:
            stats = hook.stats
            runs.add_metric([stats.name], stats.runs)
            failures.add_metric([stats.name], stats.failures)
            if stats.last_ms is not None:
                last.add_metric([stats.name], stats.last_ms / 1000.0)
        yield runs
        yield failures
        yield last


def memory_of(request_or_scope: Any) -> MemoryBudget | None:
    """The guard's memory policy (``.every(...)``, ``.on_pressure(...)``), from the lifespan
    state the server copies into each request (None: no guard, or no lifespan state)."""
    from crisisctl.guard.memory_budget import MemoryBudget

    scope = getattr(request_or_scope, "scope", request_or_scope)
    state = scope.get("state") if isinstance(scope, dict) else None
    found = state.get(MEMORY_STATE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, MemoryBudget) else None
