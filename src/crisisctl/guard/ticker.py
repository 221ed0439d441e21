"""The guard's background work: request deadlines, housekeeping, latency snapshots.

One task per event loop (`Ticker`, restarted when the loop changes) wakes every `interval_s`
(a twentieth of the shortest configured timeout, between 5 ms and 1 s) and runs the guard's
tick:

* `Timeouts.expire` — requests past their deadline. Cancelling the task stops an async handler
  (the request task then answers 504). A handler blocked in a worker thread (a sync endpoint)
  cannot be stopped that way: its thread would run on, abandoned, while the request's
  concurrency slot came back. For those the 504 is sent at once, in the app's place (the
  app's own late answer is dropped), and the task is left alone: the request keeps its slot
  until the thread's work really ends, and the task is cancelled once it is back on the event
  loop (`Timeouts.check_overdue`). `running_after_timeout` counts the handlers past their
  timeout whose work has not ended.
* `housekeeping`, about once a second: close the adaptive limit's window of a quiet service,
  rotate rate-limit keys, snapshot breaker call counts.
* every 30 s, a snapshot of each route's latency histogram (the status's recent latency).
* the guard's own process figures (`guard/process.py`): each tick's lateness is the
  event-loop lag; about once a second, a sample of RSS, CPU, threads, fds and GC counts.
* event-loop health (`guard/loop_health.py`): each tick's lateness into the lag window (the
  ticker then runs at least every `LoopHealthConfig.interval_s`, 50 ms by default), lag past
  its threshold signalled to the adaptive limit as overload, the thread pools' queues.
* the memory budget (`guard/memory_budget.py`): RSS on every tick, cleanup hooks past the
  soft budget, shedding past the hard one; its periodic cleanup hooks (`guard/periodic.py`),
  budget or not.

The request path itself appends deadlines to `Timeouts.deadlines` (the same list), takes a
request's deadline out again when it ends as the newest entry (a request that did not yield to
another: the common case, its memory then reused at once; down to two entries, so that the
list's array is not freed and allocated again on every request), and, when the list grows
past the compaction threshold, expires them without waiting for the tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from crisisctl.guard import control
from crisisctl.guard.breaker import CircuitBreaker
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import GuardConfig
from crisisctl.guard.loop_health import LoopHealth
from crisisctl.guard.memory_budget import MemoryBudget
from crisisctl.guard.metrics import RouteStats
from crisisctl.guard.outcomes import blocked_in_thread
from crisisctl.guard.process import ProcessFigures
from crisisctl.guard.routebuild import RouteBuilder
from crisisctl.guard.switching import ModeSwitch

if TYPE_CHECKING:
    from crisisctl.guard.runtime import Deadline

log = logging.getLogger("crisisctl.guard")

#: how often the housekeeping runs (key expiry, breaker snapshots, idle windows)
HOUSEKEEPING_S: Final = 1.0
#: how long route latency snapshots are kept (the status's "recent" window)
SNAPSHOT_KEEP_S: Final = 60.0
#: the deadline list is compacted on the request path when it grows past this many entries
DEADLINES_COMPACT_AT: Final = 4096


async def _dropped(message: Any) -> None:
    """Where the app's messages go once the guard has answered in its place (a timeout)."""


class Timeouts:
    """The deadlines of requests under a timeout, and what happens when one passes."""

    def __init__(self, set_compact_at: Callable[[int], None]) -> None:
        #: in arrival order; finished ones (task None) are dropped by `expire` (the same list
        #: object for the whole life of the guard: the request path holds it)
        self.deadlines: list[Deadline] = []
        #: tasks cancelled for their timeout (the request path tells them from other
        #: cancellations); the same set object for the life of the guard
        self.timed_out: set[asyncio.Task[Any]] = set()
        #: timed-out requests whose handler was blocked in a worker thread
        self.overdue: list[tuple[Deadline, asyncio.Task[Any]]] = []
        #: handlers past their timeout whose work has not ended yet (their slots stay held)
        self.running_after_timeout = 0
        self._answers: set[asyncio.Task[None]] = set()
        #: tells the request path the list length at which it should compact
        self._set_compact_at = set_compact_at

    def expire(self, now: float) -> None:
        """Time out the requests past their deadline; drop finished and expired entries."""
        live: list[Deadline] = []
        expired: list[tuple[Deadline, asyncio.Task[Any]]] = []
        for deadline in self.deadlines:
            task = deadline.task
            if task is None:
                continue  # finished, or its response has started
            if deadline.at <= now:
                deadline.task = None
                expired.append((deadline, task))
            else:
                live.append(deadline)
        self.deadlines[:] = live
        self._set_compact_at(max(DEADLINES_COMPACT_AT, 2 * len(live)))
        for deadline, task in expired:
            if task.done():
                continue
            deadline.expired = True
            self.running_after_timeout += 1
            if blocked_in_thread(deadline.work):
                self._answer(deadline)
                self.overdue.append((deadline, task))
            else:
                self.timed_out.add(task)
                task.cancel("crisisctl guard: request timeout")

    def check_overdue(self) -> None:
        """Cancel the timed-out tasks whose worker thread has returned."""
        still: list[tuple[Deadline, asyncio.Task[Any]]] = []
        for deadline, task in self.overdue:
            if task.done() or not deadline.expired:
                continue  # the request has ended
            if blocked_in_thread(deadline.work):
                still.append((deadline, task))
            else:
                self.timed_out.add(task)
                task.cancel("crisisctl guard: request timeout")
        self.overdue = still

    def ended(self, deadline: Deadline, stats: RouteStats) -> None:
        """A request that went past its timeout has ended: its work is over."""
        deadline.expired = False
        self.running_after_timeout -= 1
        sender = deadline.sender
        if sender is not None and sender.status == 504:
            stats.reject("timeout")

    def _answer(self, deadline: Deadline) -> None:
        """Send the 504 now, from a task of its own; the app's own answer will be dropped."""
        sender = deadline.sender
        if sender is None:
            return
        raw = sender.send
        sender.status = 504
        sender.send = _dropped
        body = {
            "error": "the request took longer than its timeout; its work still runs in a worker "
            "thread and holds its concurrency slot until it ends",
            "reason": "timeout",
            "timeout_s": round(deadline.at - sender.admitted, 6),
        }
        answer = asyncio.get_running_loop().create_task(control.send_json(raw, 504, body))
        self._answers.add(answer)
        answer.add_done_callback(self._answer_sent)

    def _answer_sent(self, answer: asyncio.Task[None]) -> None:
        self._answers.discard(answer)
        if not answer.cancelled() and answer.exception() is not None:
            log.debug("crisisctl guard: a 504 could not be sent (the client left?)")


def housekeeping(
    now: float,
    concurrency: ConcurrencyLimiter | None,
    limiters: Iterable[Any],
    breakers: Iterable[CircuitBreaker],
) -> None:
    """The once-a-second chores (see the module docstring)."""
    if concurrency is not None:
        concurrency.housekeeping(now)  # windows of a quiet or idle service
    for limiter in list(limiters):
        limiter.rotate(now)
    for breaker in list(breakers):
        breaker.tick(now)


def tick_interval_s(config: GuardConfig) -> float:
    """The ticker's period: a twentieth of the shortest configured timeout, 5 ms to 1 s, and
    at most the event-loop health's interval (when it is enabled)."""
    timeouts = [r.timeout_s for r in config.routes if r.timeout_s] + (
        [config.timeout_s] if config.timeout_s else []
    )
    period = min(HOUSEKEEPING_S, max(0.005, min(timeouts) / 20.0)) if timeouts else HOUSEKEEPING_S
    if config.event_loop.enabled:
        period = min(period, config.event_loop.interval_s)
    return period


class Chores:
    """The guard's tick (what its `Ticker` runs): deadlines, housekeeping, latency snapshots,
    event-loop health and the memory budget."""

    def __init__(self, timeouts: Timeouts, routes: RouteBuilder, switch: ModeSwitch) -> None:
        self._timeouts = timeouts
        #: the route builder's dicts (shared): every route, limiter and breaker built so far
        self._route_stats = routes.route_stats
        self._concurrency = routes.concurrency
        self._limiters = routes.limiters
        self._breakers = routes.breakers
        #: the mode's part of housekeeping (the recovery ramp: guard/switching.py)
        self._after_housekeeping = switch.follow_ramp
        config = routes.config
        self.event_loop = LoopHealth(config.event_loop, routes.concurrency)
        self._loop_enabled = config.event_loop.enabled
        modes = switch.modes
        self.memory = MemoryBudget(config.memory, lambda: modes.mode, switch.set_memory_shedding)
        self._memory_enabled = config.memory.enabled
        #: the memory policy's periodic hooks (`guard.memory.every`): ticked, budget or not
        self._periodic = self.memory.periodic
        self._last_housekeeping = 0.0
        self._last_snapshot = 0.0

    def tick(self, now: float, late_s: float = 0.0) -> None:
        """One tick, `late_s` after it was due: expire deadlines, the once-a-second and
        twice-a-minute chores, then the event loop's lag and the memory budget."""
        timeouts = self._timeouts
        if timeouts.deadlines:
            timeouts.expire(now)
        if timeouts.overdue:
            timeouts.check_overdue()
        if now - self._last_housekeeping >= HOUSEKEEPING_S:
            self._last_housekeeping = now
            self.housekeeping(now)
        if now - self._last_snapshot >= SNAPSHOT_KEEP_S / 2:
            self._last_snapshot = now
            for stats in list(self._route_stats.values()):
                stats.snapshot(now, SNAPSHOT_KEEP_S)
        if self._loop_enabled:
            self.event_loop.tick(now, late_s)
        if self._memory_enabled or self._periodic.hooks:
            self.memory.tick(now)

    def housekeeping(self, now: float) -> None:
        """The once-a-second chores (see the module docstring)."""
        housekeeping(now, self._concurrency, self._limiters.values(), self._breakers.values())
        self._after_housekeeping()


class Ticker:
    """Runs `tick(now, late_s)` every `interval_s` seconds in one task on the running event
    loop (`late_s`: how late that tick woke)."""

    def __init__(
        self,
        tick: Callable[[float, float], None],
        interval_s: float,
        clock: Callable[[], float],
        on_running: Callable[[bool], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.interval_s = interval_s
        self._tick = tick
        self._clock = clock
        #: told when the ticker starts or stops (the request path keeps a flag)
        self._on_running = on_running
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the process's own figures, fed by every tick (its lateness: the loop's lag)
        self.process = ProcessFigures()

    def start(self) -> None:
        """Start on the running loop, unless already running there; no loop: nothing."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        self._loop = loop
        self._task = loop.create_task(self._run(), name="crisisctl-guard-ticker")
        self._on_running(True)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task is self._task:
            self._on_running(False)

    async def _run(self) -> None:
        process = self.process
        clock = self._clock
        while True:
            due = clock() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = clock()
            try:
                self._tick(now, now - due)
            except Exception:
                self._on_error("housekeeping")
            try:
                process.tick(now, now - due)
            except Exception:
                self._on_error("process figures")

    async def aclose(self) -> None:
        """Stop the task (if any) and wait for it."""
        task, self._task = self._task, None
        self._on_running(False)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
