"""Why the guard's admitted p99 misses on Poisson arrivals: the simulation, taken apart.

`overload_goodput` measured the guard's admitted p99 at ×1.32 of its limit (2× unloaded p99)
on Poisson arrivals at 3× overload, 12 s per round, while the tuned static semaphore (N = 2)
kept ×1.06. This drives the same virtual-time simulation (`limiter_sim.py`, the real
limiter) and records, per admitted request: its arrival, whether it waited in the limiter's
queue and how long, the in-flight count it was admitted at (the requests it shares the one
worker with) and its service latency (admission to response start). It prints:

1. the guard and the semaphore over seeds, at the real run's 12 s and at the simulation's
   default 30 s (median and range of goodput and of the p99 ratio);
2. where the requests over the threshold come from: the overload's first second (the onset)
   or the steady state after it, the limit at the onset and its peak, the queue waits;
3. knobs tried in the simulation only (module constants and config fields of the limiter,
   patched for the run; `src/` is unchanged), with their p99 and goodput.

Run: ``.venv/bin/python benchmarks/apps/limiter_diagnosis.py [--seeds 1-10] [--quick]``.
The knobs patch the limiter's source module, so this runs the pure-Python limiter
(``CRISISCTL_PURE_PYTHON=1`` is set here; the figures equal the compiled ones).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    os.environ.setdefault("CRISISCTL_PURE_PYTHON", "1")  # the knobs patch module constants
ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.apps import limiter_sim as sim  # noqa: E402

from crisisctl.guard import concurrency  # noqa: E402
from crisisctl.guard.config import ConcurrencyConfig, Priority  # noqa: E402

ONSET_S = 1.0  # the overload's first second counts as its onset


@dataclass
class Admitted:
    """One admitted request of the overload (times in virtual seconds)."""

    arrived: float
    queued: bool
    wait: float
    in_flight: int  # at its admission, itself included
    service: float = 0.0  # admission to response start
    latency: float = 0.0  # arrival to response start


class _Recording(sim._Guarded):
    """The guard's admission, recording each admitted request (`sim._Guarded` does the rest)."""

    def __init__(self, cfg: ConcurrencyConfig, clock: Callable[[], float], log: list[Admitted]):
        super().__init__(cfg, clock, 1)
        self.log = log
        self.limits: list[tuple[float, float]] = []

    async def enter(self, route: int) -> object | None:
        conc = self.limiter(route)
        arrived = self.clock()
        queued = not conc.try_acquire()
        if queued and await conc.acquire(int(Priority.NORMAL)) is not None:
            return None
        now = self.clock()
        return (conc, Admitted(arrived, queued, now - arrived, conc.in_flight))

    def leave(self, token: object, rtt: float) -> None:
        assert isinstance(token, tuple)
        conc: concurrency.ConcurrencyLimiter = token[0]
        rec: Admitted = token[1]
        conc.release(self.clock(), rtt)
        rec.service = rtt
        rec.latency = self.clock() - rec.arrived
        self.log.append(rec)
        self.limits.append((self.clock(), conc.limit))


class _RecordingSemaphore(sim._Semaphore):
    def __init__(self, limit: int, clock: Callable[[], float], log: list[Admitted]) -> None:
        super().__init__(limit)
        self.clock = clock
        self.log = log
        self.limits: list[tuple[float, float]] = []

    async def enter(self, route: int) -> object | None:
        if await super().enter(route) is None:
            return None
        return Admitted(self.clock(), False, 0.0, self.in_flight)

    def leave(self, token: object, rtt: float) -> None:
        assert isinstance(token, Admitted)
        super().leave(token, rtt)
        token.service = rtt
        token.latency = self.clock() - token.arrived
        self.log.append(token)


@dataclass
class Run:
    """One simulated run, taken apart."""

    goodput_pct: float
    p99_ratio: float
    threshold: float
    requests: list[Admitted]
    limits: list[tuple[float, float]]  # (virtual time, limit estimate) at each release

    def over(self, steady: bool | None = None) -> list[Admitted]:
        onset_end = sim.WARMUP_S + ONSET_S
        return [
            r
            for r in self.requests
            if r.latency > self.threshold and (steady is None or (r.arrived >= onset_end) == steady)
        ]

    def steady_p99_ratio(self) -> float:
        steady = [r.latency for r in self.requests if r.arrived >= sim.WARMUP_S + ONSET_S]
        return _quantile(steady, 0.99) / self.threshold

    def limit_before(self, t: float) -> float:
        before = [lim for at, lim in self.limits if at < t]
        return before[-1] if before else math.nan

    def limit_at(self, start: float, end: float) -> float:
        inside = [lim for t, lim in self.limits if start <= t < end]
        return max(inside) if inside else math.nan


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def run(
    seed: int,
    duration_s: float,
    cfg: ConcurrencyConfig | None = None,
    semaphore: int | None = None,
    workload: str = "poisson",
) -> Run:
    """The guard (or a semaphore of N = `semaphore`) on `workload`, recorded."""
    spec = sim.WORKLOADS[workload]
    log: list[Admitted] = []
    made: list[Any] = []

    def make(clock: Callable[[], float]) -> sim._Admission:
        adm: Any = (
            _RecordingSemaphore(semaphore, clock, log)
            if semaphore
            else _Recording(cfg or ConcurrencyConfig(), clock, log)
        )
        made.append(adm)
        return adm  # type: ignore[no-any-return]

    threshold = 2.0 * sim._unloaded_p99(spec, seed)[(0, 0)]
    rate = 3.0 * spec.routes[0].capacity(0)
    sim._run(spec, make, rate, duration_s, seed, False, sim.WARMUP_S)
    overload = [r for r in log if r.arrived >= sim.WARMUP_S]
    done = sim.WARMUP_S + duration_s
    good = sum(1 for r in overload if r.latency <= threshold and r.arrived + r.latency <= done)
    goodput = 100.0 * good / duration_s / spec.effective_capacity(rate)
    ratio = _quantile([r.latency for r in overload], 0.99) / threshold
    return Run(goodput, ratio, threshold, overload, made[0].limits)


def _spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}–{fmt.format(max(values))}]"
    )


@contextmanager
def patched(**constants: float) -> Iterator[None]:
    """Set module constants of `crisisctl.guard.concurrency` for the block."""
    old = {name: getattr(concurrency, name) for name in constants}
    for name, value in constants.items():
        setattr(concurrency, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(concurrency, name, value)


def _no_slow_start() -> Callable[[], None]:
    """Patch: the app-limited decay forgets the level it came from (no doubling back)."""
    original = concurrency.ConcurrencyLimiter._validated

    def validated(self: concurrency.ConcurrencyLimiter, limit: float, peak: int) -> float:
        out = original(self, limit, peak)
        self._regain = None
        return out

    concurrency.ConcurrencyLimiter._validated = validated  # type: ignore[method-assign]

    def undo() -> None:
        concurrency.ConcurrencyLimiter._validated = original  # type: ignore[method-assign]

    return undo


Knob = tuple[dict[str, float], dict[str, Any], Callable[[], Callable[[], None]] | None]
#: knob name -> (constants to patch, config fields, patch function or None)
KNOBS: dict[str, Knob] = {
    "today's defaults": ({}, {}, None),
    "no slow start back to the decayed-from level": ({}, {}, _no_slow_start),
    "app-limited floor 2 (not 4)": ({"APP_LIMITED_FLOOR": 2.0}, {}, None),
    "no slow start + floor 2": ({"APP_LIMITED_FLOOR": 2.0}, {}, _no_slow_start),
    "queue interval 20 ms (not 100)": ({}, {"queue_timeout_s": 0.02}, None),
    "queue interval 2.5 ms (waits ≤ 2.5 ms)": ({}, {"queue_timeout_s": 0.0025}, None),
    "no queue (queue_size 0)": ({}, {"queue_size": 0}, None),
    "deepest cut 0.1 (not 0.25)": ({"MIN_GRADIENT": 0.1}, {}, None),
    "tolerance 1.2 (not 1.5)": ({}, {"tolerance": 1.2}, None),
    "interval 20 ms + no slow start": ({}, {"queue_timeout_s": 0.02}, _no_slow_start),
    "interval 20 ms + tolerance 1.2": ({}, {"queue_timeout_s": 0.02, "tolerance": 1.2}, None),
}


def knob_run(name: str, seed: int, duration_s: float, workload: str = "poisson") -> Run:
    """`run` with knob `name` applied (needs the pure-Python limiter: constants are patched)."""
    if not str(concurrency.__file__).endswith(".py"):
        raise RuntimeError("the knobs patch the limiter's source: set CRISISCTL_PURE_PYTHON=1")
    constants, fields, patch = KNOBS[name]
    cfg = replace(ConcurrencyConfig(), **fields)
    undo = patch() if patch else None
    try:
        with patched(**constants):
            return run(seed, duration_s, cfg, workload=workload)
    finally:
        if undo:
            undo()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1-10", help="a range a-b or a list 1,2,3")
    parser.add_argument("--quick", action="store_true", help="only sections 1 and 2")
    parser.add_argument(
        "--knob-workloads", default="poisson,constant,bimodal", help="workloads for the knobs"
    )
    args = parser.parse_args(argv)
    if "-" in args.seeds:
        a, b = args.seeds.split("-")
        seeds = list(range(int(a), int(b) + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    print(f"seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}); medians [min–max]\n")

    print("1. Poisson, 3× overload: goodput % and admitted p99 ÷ 2× unloaded p99")
    runs: dict[tuple[str, float], list[Run]] = {}
    for duration in (12.0, 30.0):
        for variant, sem in (("guard", None), ("semaphore N=2", 2)):
            rs = [run(s, duration, semaphore=sem) for s in seeds]
            runs[(variant, duration)] = rs
            print(
                f"   {variant:<14} {duration:4.0f} s: goodput "
                f"{_spread([r.goodput_pct for r in rs], '{:.1f}')}  p99 "
                f"{_spread([r.p99_ratio for r in rs])}  steady (after the first second) p99 "
                f"{_spread([r.steady_p99_ratio() for r in rs])}"
            )

    print("\n2. The guard's admitted requests (12 s runs)")
    rs = runs[("guard", 12.0)]
    w = sim.WARMUP_S
    n = [len(r.requests) for r in rs]
    over = [len(r.over()) for r in rs]
    onset = [len(r.over(steady=False)) for r in rs]
    shares = [100 * o / k for o, k in zip(over, n, strict=True)]
    print(
        f"   admitted per run {_spread(n, '{:.0f}')}; over the threshold {_spread(over, '{:.0f}')}"
        f" ({_spread(shares, '{:.2f}')} %), of which in the"
        f" first second {_spread(onset, '{:.0f}')}"
    )
    steady = [q for r in rs for q in r.requests if q.arrived >= w + ONSET_S]
    waited = [q for q in steady if q.queued]
    print(
        f"   steady state: {100 * len(waited) / len(steady):.1f} % admitted from the queue, "
        f"wait p50 {1e3 * _quantile([q.wait for q in waited], 0.5):.2f} ms, p99 "
        f"{1e3 * _quantile([q.wait for q in waited], 0.99):.2f} ms; admitted at 1 in flight "
        f"{100 * sum(q.in_flight == 1 for q in steady) / len(steady):.1f} %, service p99 "
        f"{1e3 * _quantile([q.service for q in steady], 0.99):.2f} ms; threshold "
        f"{1e3 * rs[0].threshold:.2f} ms"
    )
    first = [q for r in rs for q in r.over(steady=False)]
    print(
        f"   onset, over the threshold: wait share "
        f"{sum(q.wait for q in first) / sum(q.latency for q in first):.2f} of their latency, "
        f"in flight at admission {_spread([float(q.in_flight) for q in first], '{:.0f}')}, "
        f"latency max {_spread([1e3 * max(q.latency for q in r.requests) for r in rs], '{:.1f}')}"
        " ms"
    )
    at_onset = [r.limit_before(w) for r in rs]
    peak = [r.limit_at(w, w + 0.5) for r in rs]
    doubled = sum(p > 1.5 * a for a, p in zip(at_onset, peak, strict=True))
    print(
        f"   limit at the onset {_spread(at_onset)}; its peak in the first 0.5 s "
        f"{_spread(peak)}: doubled in {doubled} of {len(rs)} runs"
    )
    sem_rs = runs[("semaphore N=2", 12.0)]
    sem_all = [q for r in sem_rs for q in r.requests]
    print(
        f"   semaphore: over the threshold {_spread([len(r.over()) for r in sem_rs], '{:.0f}')}"
        f", admitted at 2 in flight "
        f"{100 * sum(q.in_flight == 2 for q in sem_all) / len(sem_all):.1f} %"
    )
    if args.quick:
        return 0

    print("\n3. Knobs (simulation only), 12 s runs: goodput %, p99 ratio, steady p99 ratio")
    for workload in args.knob_workloads.split(","):
        print(f"   {workload}")
        for name in KNOBS:
            ks = [knob_run(name, s, 12.0, workload) for s in seeds]
            print(
                f"     {name:<44} goodput {_spread([r.goodput_pct for r in ks], '{:.1f}')}  "
                f"p99 {_spread([r.p99_ratio for r in ks])}  steady "
                f"{_spread([r.steady_p99_ratio() for r in ks])}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
