"""The engine's hot path into a run's figures, and the once-a-second `Tick`s it reports.

`Recorder` counts each response and error into the `LoadResult`, its operation and the
current second. A `Tick` is what a running engine reports once a second: the second just
closed (counts and latency) and, with several operations, each one's figures since the last
tick; the live view and early aborts read ticks, from one process or several. A closed
second is kept only as its point of the time series (p50/p95/p99, counts): its histogram
leaves with its tick, so memory does not grow with the run's length either.

A latency is recorded once, into its second (and, with several operations, its operation's
tick); a second's histogram is merged into the run's (and the tick's into the operation's)
when it closes — exact, once a second instead of once a request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crisisctl.load.recording import LoadResult, OperationStats, SecondStats

__all__ = ["Recorder", "Tick"]


@dataclass(slots=True)
class Tick:
    """A running engine's report for the live view: the `second` just closed (its counts and
    latency) and, when there are several operations, each one's figures since the last tick."""

    second: int
    elapsed_s: float
    stats: SecondStats
    ops: dict[str, SecondStats] = field(default_factory=dict)
    process: int = 0

    def to_data(self) -> dict[str, Any]:
        """Plain data for a pipe between processes."""
        return {
            "second": self.second,
            "elapsed_s": self.elapsed_s,
            "stats": self.stats.to_data(),
            "ops": {name: stats.to_data() for name, stats in self.ops.items()},
            "process": self.process,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Tick:
        """Inverse of `to_data`."""
        return cls(
            int(data["second"]),
            float(data["elapsed_s"]),
            SecondStats.from_data(data["stats"]),
            {str(name): SecondStats.from_data(ops) for name, ops in data["ops"].items()},
            int(data["process"]),
        )


class Recorder:
    """Counts responses and errors into a `LoadResult`, its operations and its seconds."""

    def __init__(self, result: LoadResult, t0: float, ops: Sequence[OperationStats]) -> None:
        self.result = result
        self.t0 = t0
        self.ops = list(ops)
        #: with one operation its figures are the run's, copied at the end (not recorded twice)
        self.multi = len(self.ops) > 1
        for op in self.ops:
            result.operations[op.name] = op
        #: open seconds by index (closed ones leave with their tick); the one last written
        self.seconds: dict[int, SecondStats] = {}
        self.current_index = -1
        self.current = SecondStats()
        #: the next second a tick reports, and the points of the seconds already reported
        self.next_tick = 0
        self.series: list[dict[str, Any]] = []

    def _second(self, index: int) -> SecondStats:
        index = max(index, self.next_tick)  # a closed second is never reopened
        sec = self.seconds.get(index)
        if sec is None:
            sec = self.seconds[index] = SecondStats()
        self.current_index, self.current = index, sec
        return sec

    def sent(self, op: OperationStats) -> None:
        """A request of `op` starts."""
        self.result.requests += 1
        if self.multi:
            op.requests += 1

    def response(
        self,
        op: OperationStats,
        status: int,
        body_bytes: int,
        corrected_us: int,
        raw_us: int | None,
        now: float,
    ) -> None:
        """A complete response at monotonic time `now`."""
        res = self.result
        res.completed += 1
        counts = res.status_counts
        counts[status] = counts.get(status, 0) + 1
        res.bytes_received += body_bytes
        if raw_us is not None and res.latency_uncorrected is not None:
            res.latency_uncorrected.record_us(raw_us)
        index = int(now - self.t0)
        sec = self.current if index == self.current_index else self._second(index)
        sec.requests += 1
        sec.latency.record_us(corrected_us)
        expect = op.expect
        bad = status >= 400 if expect is None else status not in expect
        if bad:
            res.unexpected += 1
            sec.unexpected += 1
        if self.multi:
            op.completed += 1
            op.status_counts[status] = op.status_counts.get(status, 0) + 1
            op.bytes_received += body_bytes
            tick = op.tick
            tick.requests += 1
            tick.latency.record_us(corrected_us)
            if bad:
                op.unexpected += 1
                tick.unexpected += 1

    def error(self, op: OperationStats, kind: str, now: float) -> None:
        """A request of `op` ended in an error of `kind` at monotonic time `now`."""
        errors = self.result.errors
        errors[kind] = errors.get(kind, 0) + 1
        index = int(now - self.t0)
        sec = self.current if index == self.current_index else self._second(index)
        sec.requests += 1
        sec.errors += 1
        if self.multi:
            op.errors[kind] = op.errors.get(kind, 0) + 1
            op.tick.requests += 1
            op.tick.errors += 1

    def ticks(self, now: float, final: bool = False) -> list[Tick]:
        """Ticks for every second closed by `now` (and the current one too when `final`).

        A closed second is kept only as its series point: its histogram leaves with the tick,
        so memory does not grow with the run's length either.
        """
        closed = int(now - self.t0) + (1 if final else 0)
        upto = max(closed, max(self.seconds, default=-1) + 1) if final else closed
        out = []
        while self.next_tick < upto:
            second = self.next_tick
            self.next_tick += 1
            stats = self.seconds.pop(second, None) or SecondStats()
            if second == self.current_index:
                self.current_index = -1
            self.result.latency.merge(stats.latency)
            width = min(1.0, now - self.t0 - second) if final else 1.0
            self.series.append(stats.as_dict(second, width if width > 0 else 1.0))
            ops = {}
            if self.multi:
                for op in self.ops:
                    tick = ops[op.name] = op.take_tick()
                    op.latency.merge(tick.latency)
            out.append(Tick(second, now - self.t0, stats, ops))
        return out

    def finish(self, now: float, connects: int) -> list[Tick]:
        """Close the run at monotonic `now`: elapsed time, connections, the series (trailing
        empty seconds past the duration dropped), single-operation figures; the last ticks."""
        res = self.result
        res.elapsed_s = now - self.t0
        res.connects = connects
        last_ticks = self.ticks(now, final=True)
        keep = max(
            (i + 1 for i, point in enumerate(self.series) if point["requests"]),
            default=0,
        )
        keep = max(keep, min(math.ceil(res.duration_s), len(self.series)))
        res.per_second = self.series[:keep]
        if not self.multi and self.ops:
            op = self.ops[0]
            op.requests, op.completed, op.unexpected = res.requests, res.completed, res.unexpected
            op.bytes_received = res.bytes_received
            op.status_counts = dict(res.status_counts)
            op.errors = dict(res.errors)
            op.latency = res.latency.copy()
        return last_ticks
