"""Run a scenario on one engine or several engine processes, with live figures and aborts.

`run_scenario(scenario, base_dir, processes=N, thresholds=…, on_update=…)`:

- N = 1: the engine runs on its own event loop in a worker thread; the calling thread
  watches it (live view, abort decisions, Ctrl-C).
- N > 1: N child processes (multiprocessing, spawn) each run their `share` of the load:
  the open model's process *i* sends arrivals i, i+N, … of the one schedule, so the total
  rate is exact and arrivals interleave. They log in, say they are ready, and start together
  on one signal, from one start instant (a shared ``time.monotonic()`` value: the clock is
  system-wide, so the interleaved offsets stay interleaved across processes); once a second each
  sends its `Tick` through a queue; at the end each sends its result with its histograms
  (`LoadResult.to_dict(histograms=True)`), and the results merge exactly. The per-second
  series is rebuilt from the ticks: the histograms of one second merge across processes.

Poisson arrivals need one seed for every process's share of the one schedule: when the
scenario has none, `run_scenario` draws one and runs the scenario with it (`RunOutcome.scenario`
is the scenario as run, so the report shows the seed that reproduces the arrivals).

Either way the caller's thread turns ticks into `LiveStats`, hands them to `on_update`,
and stops the run early when an ``abort_on_fail`` threshold has failed for good. Every run
is bounded: children that have not finished by duration + timeout + `GRACE_S` are ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crisisctl.load.abort import AbortRule, AbortWindow
from crisisctl.load.plan import RunError, execute, share
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import LoadResult, SecondStats
from crisisctl.load.scenario import ClosedModel, OpenModel, Scenario, ScenarioError
from crisisctl.load.thresholds import ScopeStats, Threshold, abort_due

__all__ = [
    "LiveStats",
    "RunOutcome",
    "Watch",
    "default_processes",
    "merge_results",
    "parts_for",
    "run_scenario",
    "run_sync",
    "seeded",
]

#: How long children may take to start, import and log in.
READY_TIMEOUT_S = 60.0
#: Extra time past duration + timeout before children are ended by force.
GRACE_S = 15.0
#: The children's common start: this long after the last one said it was ready.
START_DELAY_S = 0.05
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a fresh event loop, uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def default_processes() -> int:
    """Cores − 1, at least 1 (targets are always local, so the service needs a core too)."""
    return max(1, (os.cpu_count() or 1) - 1)


class LiveStats:
    """Figures of a running test, from the ticks of all its processes."""

    def __init__(self, processes: int, operations: Sequence[str], duration_s: float) -> None:
        self.processes = processes
        self.operations = list(operations)
        self.duration_s = duration_s
        self.elapsed_s = 0.0
        self.total = SecondStats()
        self.ops: dict[str, SecondStats] = {}
        #: the last second every process has reported, and its completions
        self.last_second = -1
        self.last_rps = 0
        self._pending: dict[int, tuple[SecondStats, int]] = {}
        self._series: dict[int, dict[str, Any]] = {}

    def add(self, tick: Tick) -> None:
        """Count one process's tick."""
        self.elapsed_s = max(self.elapsed_s, tick.elapsed_s)
        self.total.merge(tick.stats)
        for name, stats in tick.ops.items():
            self.ops.setdefault(name, SecondStats()).merge(stats)
        merged, reporters = self._pending.get(tick.second, (SecondStats(), 0))
        merged.merge(tick.stats)
        self._pending[tick.second] = (merged, reporters + 1)
        if reporters + 1 >= self.processes:
            self._close(tick.second, 1.0)

    def lose_reporter(self) -> None:
        """One process (or worker) stopped reporting for good: the seconds all the others have
        reported close now."""
        self.processes = max(1, self.processes - 1)
        for second, (_, reporters) in sorted(self._pending.items()):
            if reporters >= self.processes:
                self._close(second, 1.0)

    def _close(self, second: int, width_s: float) -> None:
        stats, _ = self._pending.pop(second)
        self._series[second] = stats.as_dict(second, width_s)
        if second > self.last_second and second < math.ceil(self.duration_s):
            self.last_second, self.last_rps = second, stats.requests  # not the drain

    def series(self, end_s: float) -> list[dict[str, Any]]:
        """The per-second series of the whole run (call once every process has finished)."""
        for second in sorted(self._pending):
            width = min(1.0, end_s - second)
            self._close(second, width if width > 0 else 1.0)
        keep = max((s + 1 for s, p in self._series.items() if p["requests"]), default=0)
        keep = max(keep, min(math.ceil(self.duration_s), max(self._series, default=-1) + 1))
        return [self._series.get(s) or SecondStats().as_dict(s) for s in range(keep)]

    def scope(self, operation: str | None = None) -> ScopeStats | None:
        """Figures so far of the run or of one operation (None: no such operation)."""
        if operation is not None and operation not in self.operations:
            return None
        if operation is None or len(self.operations) == 1:
            stats = self.total
        else:
            stats = self.ops.get(operation) or SecondStats()
        return ScopeStats(
            stats.requests, stats.requests - stats.errors, stats.errors, stats.unexpected,
            stats.latency, self.elapsed_s,
        )  # fmt: skip


@dataclass(slots=True)
class RunOutcome:
    """The merged result, the scenario as run (with the seed it used), the threshold that
    stopped the run early, if one did, and a distributed run's workers."""

    result: LoadResult
    scenario: Scenario
    aborted_by: Threshold | None = None
    #: a distributed run's workers, their clocks and the lost ones (`crisisctl.load.distributed`)
    distributed: dict[str, Any] | None = None


class Watch:
    """The caller's side of a run: live figures, updates, abort decisions (local processes
    and distributed workers alike)."""

    def __init__(
        self,
        live: LiveStats,
        thresholds: Sequence[Threshold],
        on_update: Callable[[LiveStats], None] | None,
        stop: Callable[[], None],
        abort_on: Sequence[AbortRule] = (),
    ) -> None:
        self.live = live
        self.abortable = [t for t in thresholds if t.abort_on_fail]
        self.window = AbortWindow.of(abort_on)
        self.on_update = on_update
        self.stop = stop
        self.reason: str | None = None
        self.aborted_by: Threshold | None = None
        self.next_update = 0.0

    def tick(self, tick: Tick) -> None:
        self.live.add(tick)
        rule = self.window.add(tick)
        if rule is not None:
            self.abort(f"abort_on {rule.text!r} held")
        if self.reason is None:
            for t in self.abortable:
                if abort_due(t, self.live.scope(t.operation), self.live.elapsed_s):
                    self.abort(f"threshold {t.label()!r} failed", t)
                    break

    def abort(self, reason: str, threshold: Threshold | None = None) -> None:
        if self.reason is None:
            self.reason, self.aborted_by = reason, threshold
            self.stop()

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_update is not None and (force or now >= self.next_update):
            self.next_update = now + 0.25
            self.on_update(self.live)


def _thread_main(
    scenario: Scenario, base_dir: Path, inbox: queue.Queue[tuple[Any, ...]], halt: threading.Event
) -> None:
    def on_tick(tick: Tick) -> None:
        inbox.put(("tick", tick))

    def stop() -> str | None:
        return "stopped" if halt.is_set() else None

    try:
        result = run_sync(execute(scenario, base_dir, on_tick=on_tick, stop=stop))
    except (RunError, ScenarioError, ValueError) as exc:
        inbox.put(("error", 0, getattr(exc, "code", 2), str(exc)))
    except BaseException as exc:
        inbox.put(("crash", 0, exc))
    else:
        inbox.put(("done", 0, result))


def _child_main(
    data: dict[str, Any],
    base_dir: str,
    index: int,
    count: int,
    outbox: Any,
    go: Any,
    halt: Any,
    start: Any,
    outer: tuple[int, int] = (0, 1),
) -> None:
    """A child engine process: its share of the load, ticks and result through `outbox`.

    `outer` (w, W): this process's parent is worker w of a distributed run's W, so the child
    runs its part of the worker's share — part ``w + index·W`` of ``W·count`` of the one
    schedule (`crisisctl.load.worker_processes`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    worker, workers = outer
    try:
        part = share(share(Scenario.model_validate(data), worker, workers), index, count)

        async def ready() -> float | None:
            outbox.put(("ready", index))
            if not await asyncio.to_thread(go.wait, READY_TIMEOUT_S):
                raise RunError("the engine processes did not all get ready in time.", 1)
            start_at = float(start.value)
            if abs(start_at - time.monotonic()) >= 60.0:
                return None  # a clock not shared between processes (never on Linux/macOS)
            if isinstance(part.model, ClosedModel):  # users start at the common instant
                await asyncio.sleep(max(0.0, start_at - time.monotonic()))
                return None
            return start_at

        def on_tick(tick: Tick) -> None:
            tick.process = index
            outbox.put(("tick", tick.to_data()))

        def stop() -> str | None:
            return "stopped" if halt.is_set() else None

        result = run_sync(
            execute(
                part, Path(base_dir), on_tick=on_tick, stop=stop, on_ready=ready,
                part=worker + index * workers, parts=workers * count,
            )
        )  # fmt: skip
        outbox.put(("done", index, result.to_dict(histograms=True)))
    except (RunError, ScenarioError, ValueError) as exc:
        outbox.put(("error", index, getattr(exc, "code", 2), str(exc)))
    except Exception as exc:
        outbox.put(("error", index, 1, f"engine process {index} failed: {exc!r}"))


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Children inherit an ignored SIGINT, so a Ctrl-C (sent to the whole process group)
    cannot kill them while they import; the parent alone decides how to stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Spawned children re-run the parent's ``__main__`` unless it has no file or spec; the
    child entry point needs nothing from it (the CLI's main costs seconds of imports), so
    hide both while the children start."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            main.__dict__.pop("__spec__", None)


def parts_for(scenario: Scenario, wanted: int) -> int:
    """How many parts `scenario` splits into when `wanted` (a closed model has no part
    without a user)."""
    model = scenario.model
    if isinstance(model, ClosedModel):
        peak = max(max(r0, r1) for _, r0, r1 in model.schedule().segments)
        wanted = min(wanted, max(1, math.floor(peak)))
    return max(1, wanted)


def seeded(scenario: Scenario) -> Scenario:
    """`scenario` with a seed when its arrivals are Poisson: every part draws its share from
    the one schedule, so all need the same seed (and the report shows it)."""
    model = scenario.model
    if isinstance(model, OpenModel) and model.arrival == "poisson" and scenario.seed is None:
        return scenario.model_copy(update={"seed": random.SystemRandom().randrange(2**31)})
    return scenario


def merge_results(results: Sequence[LoadResult], live: LiveStats) -> LoadResult:
    """The parts' results merged exactly (counts and HDR histograms add), with the per-second
    series rebuilt from the parts' ticks (percentiles per second do not add)."""
    merged = results[0]
    for other in results[1:]:
        merged.merge(other)
    merged.per_second = live.series(merged.elapsed_s)
    return merged


def run_scenario(
    scenario: Scenario,
    base_dir: Path,
    *,
    processes: int = 1,
    thresholds: Sequence[Threshold] = (),
    on_update: Callable[[LiveStats], None] | None = None,
) -> RunOutcome:
    """Run `scenario` on `processes` engines (fewer when a closed model has fewer users).

    Raises RunError (with an exit code) when the run cannot start or a process fails.
    """
    scenario = seeded(scenario)
    count = parts_for(scenario, processes)
    names = [op.label for op in scenario.operations] + [step.label for step in scenario.steps]
    live = LiveStats(count, names, scenario.duration_s)
    limit = scenario.duration_s + scenario.timeout + GRACE_S
    if count == 1:
        return _run_in_thread(scenario, base_dir, live, thresholds, on_update, limit)
    return _run_in_processes(scenario, base_dir, count, live, thresholds, on_update, limit)


def _run_in_thread(
    scenario: Scenario,
    base_dir: Path,
    live: LiveStats,
    thresholds: Sequence[Threshold],
    on_update: Callable[[LiveStats], None] | None,
    limit_s: float,
) -> RunOutcome:
    inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
    halt = threading.Event()
    watch = Watch(live, thresholds, on_update, halt.set, scenario.abort_rules())
    worker = threading.Thread(
        target=_thread_main, args=(scenario, base_dir, inbox, halt), daemon=True
    )
    worker.start()
    result: LoadResult | None = None
    while result is None:
        try:
            message = inbox.get(timeout=0.2)
            kind = message[0]
            if kind == "tick":
                watch.tick(message[1])
                watch.update()
            elif kind == "done":
                result = message[2]
            elif kind == "error":
                raise RunError(message[3], message[2])
            else:
                raise message[2]
        except queue.Empty:
            watch.update()
        except KeyboardInterrupt:
            watch.abort("interrupted")  # the engine stops sending, then drains
    worker.join(limit_s)
    watch.update(force=True)
    if watch.reason is not None:
        result.aborted = watch.reason
    return RunOutcome(result, scenario, watch.aborted_by)


def _run_in_processes(
    scenario: Scenario,
    base_dir: Path,
    count: int,
    live: LiveStats,
    thresholds: Sequence[Threshold],
    on_update: Callable[[LiveStats], None] | None,
    limit_s: float,
) -> RunOutcome:
    ctx = multiprocessing.get_context("spawn")
    outbox = ctx.Queue()
    go, halt = ctx.Event(), ctx.Event()
    start = ctx.Value("d", 0.0)
    data = scenario.model_dump(mode="json", by_alias=True)
    children = [
        ctx.Process(
            target=_child_main,
            args=(data, str(base_dir), i, count, outbox, go, halt, start),
            name=f"crisisctl-load-{i}",
            daemon=True,
        )
        for i in range(count)
    ]
    watch = Watch(live, thresholds, on_update, halt.set, scenario.abort_rules())
    results: dict[int, LoadResult] = {}
    try:
        with _main_module_hidden(), _sigint_ignored():
            for child in children:
                child.start()
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(results) < count:
            if not go.is_set() and len(ready) == count:
                start.value = time.monotonic() + START_DELAY_S
                go.set()
                deadline = time.monotonic() + limit_s
            if time.monotonic() > deadline:
                raise RunError("the engine processes did not finish in time.", 1)
            try:
                message = outbox.get(timeout=0.2)
                kind = message[0]
                if kind == "tick":
                    watch.tick(Tick.from_data(message[1]))
                    watch.update()
                elif kind == "ready":
                    ready.add(message[1])
                elif kind == "done":
                    results[message[1]] = LoadResult.from_dict(message[2])
                else:
                    raise RunError(message[3], message[2])
            except queue.Empty:
                if any(not c.is_alive() and i not in results for i, c in enumerate(children)):
                    time.sleep(0.2)  # a last message may still be in the pipe
                    if outbox.empty():
                        raise RunError("an engine process ended without a result.", 1) from None
                watch.update()
            except KeyboardInterrupt:
                watch.abort("interrupted")  # the children stop sending, then drain
    finally:
        halt.set()
        for child in children:
            if go.is_set():  # started children stop by themselves once halted
                child.join(5.0)
            if child.is_alive():
                child.terminate()
                child.join(5.0)
        outbox.close()
    merged = merge_results([results[index] for index in range(count)], live)
    watch.update(force=True)
    if watch.reason is not None:
        merged.aborted = watch.reason
    return RunOutcome(merged, scenario, watch.aborted_by)
