"""What the engine's open and closed models share: operations, the weighted draw, the run's
stop time, argument checks, the once-a-second ticker and the end of a run."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from crisisctl.load.recorder import Recorder, Tick
from crisisctl.load.recording import OperationStats
from crisisctl.load.templates import BoundRequest
from crisisctl.transport.client import HttpClient

__all__ = [
    "EARLY_S",
    "LATE_START_S",
    "Control",
    "Operation",
    "Picker",
    "RequestSource",
    "check_common",
    "check_ops",
    "finish_run",
    "ticker",
]

#: A request that starts more than this long after its intended time counts as a late start.
LATE_START_S: Final = 0.001
#: Timers fire up to ~1 ms late, so a worker aims this much early.
EARLY_S: Final = 0.0005


# -- operations ------------------------------------------------------------------------------
class RequestSource(Protocol):
    """Anything that gives the request a user sends, bound to the user's extra headers."""

    def bind(self, extra_headers: Mapping[str, str] | None = None) -> BoundRequest: ...


@dataclass(frozen=True, slots=True)
class Operation:
    """One kind of request of a run, drawn with probability weight ÷ total weight."""

    name: str
    request: RequestSource
    weight: float = 1.0
    #: statuses that pass the operation's check (None: any status below 400)
    expect: frozenset[int] | None = None
    method: str = "GET"
    path: str = "/"

    def stats(self) -> OperationStats:
        """Empty figures for this operation."""
        return OperationStats(self.name, self.method, self.path, self.weight, self.expect)


class Picker:
    """A user's operations, bound to its headers, and the weighted draw between them."""

    __slots__ = ("bound", "cumulative", "head_only", "stats", "total")

    def __init__(
        self, ops: Sequence[Operation], stats: Sequence[OperationStats], headers: Mapping[str, str]
    ) -> None:
        self.stats = list(stats)
        self.bound = [op.request.bind(headers) for op in ops]
        self.head_only = [op.method.upper() == "HEAD" for op in ops]
        self.cumulative = list(itertools.accumulate(op.weight for op in ops))
        self.total = self.cumulative[-1]

    def pick(self, rng: random.Random) -> int:
        if len(self.cumulative) == 1:
            return 0
        index = bisect.bisect_right(self.cumulative, rng.random() * self.total)
        return min(index, len(self.cumulative) - 1)


class Control:
    """When sending stops (moved earlier by an abort) and why the run stopped early."""

    __slots__ = ("aborted", "stop_at")

    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.aborted: str | None = None


def check_ops(operations: Sequence[Operation]) -> None:
    if not operations:
        raise ValueError("a run needs at least one operation.")
    names = [op.name for op in operations]
    if len(set(names)) != len(names):
        raise ValueError("operation names must be unique.")
    if any(not (math.isfinite(op.weight) and op.weight > 0) for op in operations):
        raise ValueError("operation weights must be positive numbers.")


def check_common(duration_s: float, timeout_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"the duration must be a positive number of seconds, not {duration_s!r}.")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"the timeout must be a positive number of seconds, not {timeout_s!r}.")


async def ticker(
    rec: Recorder,
    ctl: Control,
    on_tick: Callable[[Tick], None] | None,
    stop: Callable[[], str | None] | None,
) -> None:
    """Report each closed second to `on_tick`; poll `stop` (5 times a second)."""
    while True:
        now = time.monotonic()
        for tick in rec.ticks(now):
            if on_tick is not None:
                on_tick(tick)
        if stop is not None and ctl.aborted is None:
            reason = stop()
            if reason is not None:
                ctl.aborted = reason
                ctl.stop_at = min(ctl.stop_at, now)
        to_boundary = 1.0 - ((now - rec.t0) % 1.0)
        await asyncio.sleep(min(0.2, to_boundary + 0.0005))


def finish_run(
    rec: Recorder,
    clients: Sequence[HttpClient],
    ctl: Control,
    on_tick: Callable[[Tick], None] | None,
) -> None:
    if ctl.aborted is not None:
        rec.result.aborted = ctl.aborted
        # the rate is counted over the time the run actually sent
        rec.result.duration_s = max(min(ctl.stop_at - rec.t0, rec.result.duration_s), 1e-3)
    rec.result.connect_s = sum(c.connect_s for c in clients)
    rec.result.tls_s = sum(c.tls_s for c in clients)
    for tick in rec.finish(time.monotonic(), sum(c.connects for c in clients)):
        if on_tick is not None:
            on_tick(tick)
