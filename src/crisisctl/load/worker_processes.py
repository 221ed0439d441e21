"""A distributed worker's share over N engine processes (``crisisctl load-worker --processes N``).

One worker host should use all its cores, as a local ``--processes N`` run does. Worker *w* of
*W* owns arrivals w, w+W, w+2W, … of the one schedule (closed model: its users); its child
*i* of *N* runs part ``w + i·W`` of ``W·N`` (`schedule.part_of`): arrivals w+iW, w+iW+WN, … —
together exactly the worker's share, interleaved, the total rate exact. Closed-model users and
``--max-requests`` split twice (`plan.share` of `plan.share`), a unique feeder's rows by the
global part, so no two processes of the whole run share one.

The children are `crisisctl.load.processes`'s engine processes. Once all of them are logged in
and ready, `run_worker_share` calls `on_ready` (the worker's barrier with the coordinator),
which returns the common start instant on this host's monotonic clock; the children start
there. Their ticks of one second merge into one `Tick` (`TickMerger`) before they go to
`on_tick`, so the coordinator sees one reporter per worker, as before; their results merge
exactly (HDR histograms add). `stop()` is polled: a reason halts every child. A child that
fails fails the share (`RunError`).
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from pathlib import Path

from crisisctl.load.plan import RunError, share
from crisisctl.load.processes import (
    GRACE_S,
    READY_TIMEOUT_S,
    START_DELAY_S,
    _child_main,
    _main_module_hidden,
    _sigint_ignored,
    parts_for,
)
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import LoadResult, SecondStats
from crisisctl.load.scenario import Scenario

__all__ = ["TickMerger", "run_worker_share"]


class TickMerger:
    """Ticks of `count` processes in, one merged `Tick` per second out (once every process
    still running reported that second, or at `flush`)."""

    def __init__(self, count: int, emit: Callable[[Tick], None]) -> None:
        self.count = count
        self.emit = emit
        self.pending: dict[int, tuple[Tick, int]] = {}

    def add(self, tick: Tick) -> None:
        """One process's tick."""
        got = self.pending.get(tick.second)
        if got is None:
            merged = Tick(tick.second, tick.elapsed_s, SecondStats(), {})
            reporters = 0
        else:
            merged, reporters = got
        merged.elapsed_s = max(merged.elapsed_s, tick.elapsed_s)
        merged.stats.merge(tick.stats)
        for name, stats in tick.ops.items():
            merged.ops.setdefault(name, SecondStats()).merge(stats)
        self.pending[tick.second] = (merged, reporters + 1)
        self._emit_ready()

    def _emit_ready(self) -> None:
        for second in sorted(self.pending):
            merged, reporters = self.pending[second]
            if reporters < self.count:
                return  # seconds go out in order
            del self.pending[second]
            self.emit(merged)

    def flush(self) -> None:
        """Every second still pending (the run is over)."""
        for second in sorted(self.pending):
            self.emit(self.pending.pop(second)[0])


def run_worker_share(
    scenario: Scenario,
    base_dir: Path,
    *,
    worker: int,
    workers: int,
    processes: int,
    on_ready: Callable[[], float | None],
    on_tick: Callable[[Tick], None],
    stop: Callable[[], str | None],
) -> LoadResult:
    """Worker `worker` of `workers`'s share of `scenario` on `processes` engine processes
    (fewer when the share has fewer closed-model users); see the module's docstring."""
    count = parts_for(share(scenario, worker, workers), processes)
    ctx = multiprocessing.get_context("spawn")
    outbox = ctx.Queue()
    go, halt = ctx.Event(), ctx.Event()
    start = ctx.Value("d", 0.0)
    data = scenario.model_dump(mode="json", by_alias=True)
    children = [
        ctx.Process(
            target=_child_main,
            args=(data, str(base_dir), i, count, outbox, go, halt, start, (worker, workers)),
            name=f"crisisctl-worker-{worker}-{i}",
            daemon=True,
        )
        for i in range(count)
    ]
    merger = TickMerger(count, on_tick)
    results: dict[int, LoadResult] = {}
    limit_s = scenario.duration_s + scenario.timeout + GRACE_S
    try:
        with _main_module_hidden(), _sigint_ignored():
            for child in children:
                child.start()
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(results) < count:
            if not go.is_set() and len(ready) == count:
                start_at = on_ready()
                start.value = time.monotonic() + START_DELAY_S if start_at is None else start_at
                go.set()
                deadline = time.monotonic() + limit_s
            if time.monotonic() > deadline:
                raise RunError("the worker's engine processes did not finish in time.", 1)
            if not halt.is_set() and stop() is not None:
                halt.set()
            try:
                message = outbox.get(timeout=0.2)
            except queue.Empty:
                if any(not c.is_alive() and i not in results for i, c in enumerate(children)):
                    time.sleep(0.2)  # a last message may still be in the pipe
                    if outbox.empty():
                        raise RunError("an engine process ended without a result.", 1) from None
                continue
            kind = message[0]
            if kind == "tick":
                merger.add(Tick.from_data(message[1]))
            elif kind == "ready":
                ready.add(message[1])
            elif kind == "done":
                results[message[1]] = LoadResult.from_dict(message[2])
            else:
                raise RunError(message[3], message[2])
    finally:
        halt.set()
        for child in children:
            if go.is_set():
                child.join(5.0)
            if child.is_alive():
                child.terminate()
                child.join(5.0)
        outbox.close()
    merger.flush()
    merged = results[0]
    for index in range(1, count):
        merged.merge(results[index])
    return merged
