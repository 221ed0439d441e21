"""The workloads of `benchmarks/overload_goodput.py` and how their goodput is counted.

A workload is the routes it sends to (paths of `benchmarks/apps/capacity_app.py`), how the
arrivals are spaced, and whether a route turns slow half-way:

* ``constant`` — ``/work`` (5 ms of CPU, one worker), evenly spaced arrivals (the one the
  guard was tuned on);
* ``poisson`` — the same route, Poisson arrivals (exponential gaps, seeded);
* ``bimodal`` — ``/bimodal`` (1 ms for 90 %, 50 ms for 10 % of the requests), evenly spaced;
* ``two_route`` — ``/a`` (= ``/work``) and ``/b`` (a dependency of its own, 5 ms) alternate;
  half-way through the run ``/b`` turns slow (100 ms): phase 0 before, phase 1 after.

Goodput counts 2xx responses whose corrected latency is within the threshold of their route
in the phase they were sent in (2× that route's unloaded p99 in that phase), completed
within the schedule, per second. It is judged against the workload's *effective capacity*:
for each phase and route, the lower of the offered rate and the route's measured capacity,
summed over routes and weighted by the phase's share of the run (for one route and one
phase this is the measured capacity, the service being overloaded). Routes are measured one
at a time; when both are busy, ``/b``'s event-loop work shares the server's core with
``/a``'s worker, so ``/a`` can then serve a few per cent less than measured alone.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from crisisctl.stats import LatencyHistogram

__all__ = ["WORKLOADS", "Goodput", "Workload", "effective_capacity"]


@dataclass(frozen=True)
class Workload:
    """Routes, arrival spacing and whether the last route turns slow half-way."""

    name: str
    paths: tuple[str, ...]
    arrival: str  # "constant" | "poisson"
    turn_slow: bool = False
    #: closed-loop users that saturate each route when its capacity is measured
    capacity_users: tuple[int, ...] = (4,)

    @property
    def phases(self) -> tuple[int, ...]:
        return (0, 1) if self.turn_slow else (0,)

    def switch_at(self, duration_s: float) -> float:
        return duration_s / 2

    def phase_of(self, offset_s: float, duration_s: float) -> int:
        return 1 if self.turn_slow and offset_s >= self.switch_at(duration_s) else 0

    def arrivals(self, rate: float, duration_s: float, seed: int) -> list[tuple[float, int]]:
        """(offset s, route index) of every arrival; routes take turns."""
        out: list[tuple[float, int]] = []
        routes = len(self.paths)
        if self.arrival == "poisson":
            rng = random.Random(seed)
            t = rng.expovariate(rate)
            while t < duration_s:
                out.append((t, len(out) % routes))
                t += rng.expovariate(rate)
            return out
        n = int(rate * duration_s)
        return [(k / rate, k % routes) for k in range(n)]


WORKLOADS = {
    "constant": Workload("constant", ("/work",), "constant"),
    "poisson": Workload("poisson", ("/work",), "poisson"),
    "bimodal": Workload("bimodal", ("/bimodal",), "constant"),
    "two_route": Workload("two_route", ("/a", "/b"), "constant", True, (4, 8)),
}


def effective_capacity(
    workload: Workload, rate: float, capacity: dict[tuple[int, int], float]
) -> float:
    """Requests/s the service could serve of this offered load: per phase, each route's
    offered share capped by its capacity, summed; phases weighted by their share of the run."""
    per_route = rate / len(workload.paths)
    phases = workload.phases
    return sum(
        min(per_route, capacity[(route, phase)])
        for phase in phases
        for route in range(len(workload.paths))
    ) / len(phases)


class Goodput:
    """`on_response` callback: 2xx responses within their (route, phase) threshold, per second,
    and the admitted latency per (route, phase)."""

    def __init__(
        self,
        workload: Workload,
        thresholds_s: dict[tuple[int, int], float],
        duration_s: float,
        drain_s: float,
    ) -> None:
        self.workload = workload
        self.thresholds_s = thresholds_s
        self.duration_s = duration_s
        self.t0 = time.monotonic()
        self.bins = [0] * (int(duration_s + drain_s) + 2)
        self.good = 0
        #: responses, 2xx and good responses that completed within the schedule (not the drain)
        self.done_in_schedule = 0
        self.ok_in_schedule = 0
        self.good_in_schedule = 0
        self.admitted: dict[tuple[int, int], LatencyHistogram] = {
            key: LatencyHistogram() for key in thresholds_s
        }

    def __call__(self, status: int, latency_s: float, route: int, offset_s: float) -> None:
        now = time.monotonic() - self.t0
        in_schedule = now < self.duration_s
        self.done_in_schedule += in_schedule
        if not 200 <= status <= 299:
            return
        key = (route, self.workload.phase_of(offset_s, self.duration_s))
        self.admitted[key].record_us(int(latency_s * 1_000_000))
        self.ok_in_schedule += in_schedule
        if latency_s <= self.thresholds_s[key]:
            self.good += 1
            self.good_in_schedule += in_schedule
            self.bins[min(int(now), len(self.bins) - 1)] += 1

    def series(self) -> list[int]:
        """Per-second counts: every second of the schedule, then the drain while non-zero."""
        last = max([int(self.duration_s)] + [i for i, n in enumerate(self.bins) if n])
        return self.bins[: last + 1]
