"""A deterministic, virtual-time simulation of the guard's concurrency limit under overload.

`benchmarks/overload_goodput.py` measures goodput on real servers, which a shared, busy host
makes noisy. This drives the REAL limiter (`crisisctl.guard.concurrency.ConcurrencyLimiter`,
through its public `try_acquire` / `acquire` / `release` / `housekeeping`, as the guard's
request path calls them) on an asyncio event loop whose clock is virtual: the loop never
sleeps, it jumps to the next timer. A run of 30 simulated seconds takes a few real seconds,
and the same seed gives the same figures on any machine.

The simulated service mirrors `benchmarks/apps/capacity_app.py`: one CPU worker serving its
FIFO queue (the thread pool's queue); ``/b`` of the two-route workload waits on a dependency of
its own (4 threads) that turns slow half-way. An admitted request reaches the worker after
`HOP_S` (the event loop hands it over) and its response starts `HOP_S` after the worker is
done: at a limit of one the worker idles for those hops between requests, as a real one does.
Each refusal takes `REFUSAL_CPU_S` from the worker's core (the event loop shares it), and the
overload follows `WARMUP_S` of unloaded traffic, as in the real benchmark. Service times come
in shuffled bags holding the mix's exact shares (the capacity does not move with the seed).
What it does not model: the host's jitter and stalls, the HTTP stack's cost of admitted
requests, the load generator.

Workloads (`WORKLOADS`, as in `benchmarks/apps/goodput_workloads.py`): ``constant`` (5 ms,
evenly spaced arrivals), ``poisson`` (5 ms, exponential gaps), ``bimodal`` (1 ms for 90 %,
50 ms for 10 %, evenly spaced) and ``two_route`` (``/a`` = 5 ms on the worker, ``/b`` = 5 ms
on its dependency, 100 ms from half-way). Offered load: 3× the first route's capacity.

Goodput, by construction: 2xx responses within 2× their route's unloaded p99 in their phase
(the unloaded p99 is simulated too: the bare service at 40 req/s), completed within the
schedule, per second, against the effective capacity (per phase and route, the lower of the
offered rate and the route's capacity, as `goodput_workloads.effective_capacity`). Admitted
p99 is the worst (route, phase) p99 of the 2xx responses over 2× that unloaded p99.

Variants: ``guarded`` (the default `ConcurrencyConfig`: adaptive, one limit per route under
the guard-wide cap), ``guarded_service`` (``scope="service"``), ``semaphore`` (a static limit
tried without waiting, its N tuned on ``constant`` as the real benchmark does) and
``unguarded``. ``python benchmarks/apps/limiter_sim.py [--workloads ...] [--seeds 1,2,3]
[--trace]`` prints a table; `simulate` is the function tests call.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import selectors
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
try:
    import crisisctl.guard.concurrency  # noqa: F401
except ImportError:  # not installed (editable) yet: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from crisisctl.guard.concurrency import ConcurrencyLimiter  # noqa: E402
from crisisctl.guard.config import ConcurrencyConfig, Priority  # noqa: E402

__all__ = ["WORKLOADS", "SimResult", "SimWorkload", "simulate", "tuned_semaphore"]

#: the event loop's hand-over, each way, between the guard and the worker (seconds)
HOP_S = 0.0002
#: the rate of the unloaded reference run (requests/s, as the real benchmark)
UNLOADED_RATE = 40.0
#: CPU the event loop spends on one refusal (parsing it, answering 503): it shares the core
#: with the worker, so it delays the job in service (when there is one)
REFUSAL_CPU_S = 0.00005
#: seconds of unloaded traffic before the overload (the real benchmark's warm-up), per route
WARMUP_S = 3.0
#: the guard's housekeeping period (guard/ticker.py runs it about once a second)
HOUSEKEEPING_S = 1.0
#: the static limits the semaphore peer is tuned over (on ``constant``)
SEMAPHORE_GRID = (1, 2, 3, 4, 6, 8, 12, 16)
#: the service time draws come in shuffled bags of this many (see `SimRoute.draw`)
BAG = 100


# -- a virtual clock for asyncio -----------------------------------------------------------
class _JumpingSelector(selectors.SelectSelector):
    """A selector that never waits: it moves the loop's virtual clock to the next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual: it jumps from one timer to the next."""

    def __init__(self) -> None:
        self._jumper = _JumpingSelector()
        super().__init__(self._jumper)

    def time(self) -> float:
        return self._jumper.now


# -- workloads ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimRoute:
    """One route: its service time draw, where it runs, and its slow phase (if any)."""

    fast: tuple[tuple[float, float], ...]  # (share, seconds) of the service time mix
    on_worker: bool = True
    threads: int = 1  # a dependency's threads (routes off the worker)
    slow_s: float | None = None  # the service time from half-way (the route turns slow)

    def mean_s(self, phase: int) -> float:
        if phase and self.slow_s is not None:
            return self.slow_s
        return sum(share * s for share, s in self.fast)

    def capacity(self, phase: int) -> float:
        return self.threads / self.mean_s(phase)

    def draw(self, rng: random.Random, phase: int, bag: list[float]) -> float:
        """A service time: from shuffled bags of 100 holding the mix's exact shares (random
        order, the mean exact over every bag, so a seed does not move the capacity)."""
        if phase and self.slow_s is not None:
            return self.slow_s
        if not bag:
            bag.extend(s for share, s in self.fast for _ in range(round(share * BAG)))
            rng.shuffle(bag)
        return bag.pop()


@dataclass(frozen=True)
class SimWorkload:
    """Routes (taking turns), arrival spacing, and whether the last route turns slow."""

    name: str
    routes: tuple[SimRoute, ...]
    arrival: str = "constant"  # "constant" | "poisson"

    @property
    def turn_slow(self) -> bool:
        return any(r.slow_s is not None for r in self.routes)

    @property
    def phases(self) -> tuple[int, ...]:
        return (0, 1) if self.turn_slow else (0,)

    def arrivals(self, rate: float, duration_s: float, seed: int) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        n_routes = len(self.routes)
        if self.arrival == "poisson":
            rng = random.Random(seed)
            t = rng.expovariate(rate)
            while t < duration_s:
                out.append((t, len(out) % n_routes))
                t += rng.expovariate(rate)
            return out
        return [(k / rate, k % n_routes) for k in range(int(rate * duration_s))]

    def effective_capacity(self, rate: float) -> float:
        per_route = rate / len(self.routes)
        return sum(
            min(per_route, route.capacity(phase)) for phase in self.phases for route in self.routes
        ) / len(self.phases)


_WORK = SimRoute(((1.0, 0.005),))
WORKLOADS: dict[str, SimWorkload] = {
    "constant": SimWorkload("constant", (_WORK,)),
    "poisson": SimWorkload("poisson", (_WORK,), "poisson"),
    "bimodal": SimWorkload("bimodal", (SimRoute(((0.9, 0.001), (0.1, 0.050))),)),
    "two_route": SimWorkload(
        "two_route", (_WORK, SimRoute(((1.0, 0.005),), on_worker=False, threads=4, slow_s=0.1))
    ),
}


# -- the service ----------------------------------------------------------------------------
class _Server:
    """A pool of `threads` serving a FIFO queue (the worker, or a route's dependency)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int) -> None:
        self.loop = loop
        self.free = threads
        #: CPU seconds taken from this server by the event loop, paid by the next job
        self.debt = 0.0
        self.queue: deque[tuple[float, asyncio.Future[None]]] = deque()

    def submit(self, service_s: float) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self.loop.create_future()
        if self.free:
            self.free -= 1
            self.debt = 0.0  # an idle worker's core had time for it
            self.loop.call_later(service_s, self._done, done)
        else:
            self.queue.append((service_s, done))
        return done

    def _done(self, done: asyncio.Future[None]) -> None:
        done.set_result(None)
        if self.queue:
            service_s, nxt = self.queue.popleft()
            self.loop.call_later(service_s + self.debt, self._done, nxt)
            self.debt = 0.0
        else:
            self.free += 1


# -- admission variants ---------------------------------------------------------------------
class _Admission:
    """How a variant admits: `enter(route)` -> a token (None: refused), `leave(token, rtt)`."""

    async def enter(self, route: int) -> object | None:
        return True

    def leave(self, token: object, rtt: float) -> None:
        return None

    def tick(self, now: float) -> None:
        return None


class _Guarded(_Admission):
    def __init__(self, config: ConcurrencyConfig, clock: Callable[[], float], n: int) -> None:
        self.top = ConcurrencyLimiter(config, clock, ceiling=config.scope == "route")
        self.route_limiters = (
            [self.top.child(f"r{i}") for i in range(n)] if config.scope == "route" else []
        )
        self.clock = clock

    def limiter(self, route: int) -> ConcurrencyLimiter:
        return self.route_limiters[route] if self.route_limiters else self.top

    async def enter(self, route: int) -> object | None:
        conc = self.limiter(route)
        if conc.try_acquire():
            return conc
        reason = await conc.acquire(int(Priority.NORMAL))
        return conc if reason is None else None

    def leave(self, token: object, rtt: float) -> None:
        assert isinstance(token, ConcurrencyLimiter)
        token.release(self.clock(), rtt)

    def tick(self, now: float) -> None:
        self.top.housekeeping(now)


class _Semaphore(_Admission):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    async def enter(self, route: int) -> object | None:
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return True

    def leave(self, token: object, rtt: float) -> None:
        self.in_flight -= 1


# -- results --------------------------------------------------------------------------------
def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class SimResult:
    """One simulated run: goodput against the effective capacity and the admitted latency."""

    workload: str
    variant: str
    seed: int
    goodput_pct: float
    #: worst (route, phase) admitted p99 over 2× that route's unloaded p99 (≤ 1.0 meets it)
    p99_ratio: float
    admitted: int
    refused: int
    #: (route, phase) -> (admitted p99, threshold = 2× unloaded p99), seconds
    p99_by_key: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    #: (virtual time, route, limit) every 50 ms, when traced
    trace: list[tuple[float, int, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.goodput_pct >= 90.0 and self.p99_ratio <= 1.0


def _run(
    workload: SimWorkload,
    make_admission: Callable[[Callable[[], float]], _Admission],
    rate: float,
    duration_s: float,
    seed: int,
    trace: bool = False,
    warmup_s: float = 0.0,
) -> tuple[list[tuple[int, int, float, float, bool]], int, list[tuple[float, int, float]]]:
    """(route, phase, latency, completed at - warm-up, admitted) per request of the schedule
    (after `warmup_s` of unloaded traffic), its refusals, the limit trace."""
    loop = VirtualTimeLoop()
    clock = loop.time
    rng = random.Random(seed * 7919 + 17)
    admission = make_admission(clock)
    worker = _Server(loop, 1)
    deps = [_Server(loop, r.threads) for r in workload.routes]
    records: list[tuple[int, int, float, float, bool]] = []
    bags: list[list[float]] = [[] for _ in workload.routes]
    refused = 0
    switch = warmup_s + duration_s / 2
    traced: list[tuple[float, int, float]] = []

    async def request(arrived: float, route: int, warm: bool) -> None:
        nonlocal refused
        phase = 1 if workload.turn_slow and arrived >= switch else 0
        token = await admission.enter(route)
        if token is None:
            refused += not warm
            if not worker.free:
                worker.debt += REFUSAL_CPU_S
            return
        admitted = clock()
        spec = workload.routes[route]
        await asyncio.sleep(HOP_S)
        server = worker if spec.on_worker else deps[route]
        now_phase = 1 if workload.turn_slow and clock() >= switch else 0
        await server.submit(spec.draw(rng, now_phase, bags[route]))
        await asyncio.sleep(HOP_S)
        now = clock()
        admission.leave(token, now - admitted)
        if not warm:
            records.append((route, phase, now - arrived, now - warmup_s, True))

    async def main() -> None:
        tasks: list[asyncio.Task[None]] = []
        start = clock()
        warm_up = (
            [
                (offset, route, True)
                for offset, route in workload.arrivals(UNLOADED_RATE, warmup_s, seed)
            ]
            if warmup_s > 0
            else []
        )
        schedule = warm_up + [
            (warmup_s + offset, route, False)
            for offset, route in workload.arrivals(rate, duration_s, seed)
        ]
        for offset, route, warm in schedule:
            delay = start + offset - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(request(clock(), route, warm)))
            if len(tasks) > 4096:
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            admission.tick(clock())

    async def tracer() -> None:
        if not isinstance(admission, _Guarded):
            return
        while True:
            await asyncio.sleep(0.05)
            for i in range(len(workload.routes)):
                traced.append((clock(), i, admission.limiter(i).limit))

    async def outer() -> None:
        tick = loop.create_task(ticker())
        tr = loop.create_task(tracer()) if trace else None
        try:
            await main()
        finally:
            tick.cancel()
            if tr is not None:
                tr.cancel()

    try:
        loop.run_until_complete(outer())
    finally:
        loop.close()
    return records, refused, traced


def _unloaded_p99(workload: SimWorkload, seed: int) -> dict[tuple[int, int], float]:
    """Each (route, phase)'s p99 on the bare service at `UNLOADED_RATE`, one route at a time."""
    out: dict[tuple[int, int], float] = {}
    for route in range(len(workload.routes)):
        for phase in workload.phases:
            spec = workload.routes[route]
            if phase and spec.slow_s is not None:
                spec = SimRoute(((1.0, spec.slow_s),), spec.on_worker, spec.threads)
            alone = SimWorkload("unloaded", (spec,), "constant")
            records, _, _ = _run(alone, lambda _c: _Admission(), UNLOADED_RATE, 10.0, seed)
            out[(route, phase)] = _p99([r[2] for r in records])
    return out


def simulate(
    workload: str | SimWorkload,
    variant: str = "guarded",
    *,
    seed: int = 1,
    duration_s: float = 30.0,
    overload: float = 3.0,
    config: ConcurrencyConfig | None = None,
    semaphore_limit: int | None = None,
    trace: bool = False,
) -> SimResult:
    """Run `variant` on `workload` at `overload` × the first route's capacity; see the module
    docstring for how goodput and the admitted p99 are counted."""
    spec = WORKLOADS[workload] if isinstance(workload, str) else workload
    rate = overload * spec.routes[0].capacity(0)
    n = len(spec.routes)
    make: Callable[[Callable[[], float]], _Admission]
    if variant in ("guarded", "guarded_service"):
        cfg = config or ConcurrencyConfig()
        if variant == "guarded_service":
            cfg = ConcurrencyConfig(**{**_fields(cfg), "scope": "service"})
        make = lambda clock: _Guarded(cfg, clock, n)  # noqa: E731
    elif variant == "semaphore":
        limit = semaphore_limit if semaphore_limit is not None else tuned_semaphore(seed)
        make = lambda _clock: _Semaphore(limit)  # noqa: E731
    elif variant == "unguarded":
        make = lambda _clock: _Admission()  # noqa: E731
    else:
        raise ValueError(f"unknown variant {variant!r}")
    thresholds = {key: 2.0 * p99 for key, p99 in _unloaded_p99(spec, seed).items()}
    records, refused, traced = _run(spec, make, rate, duration_s, seed, trace, WARMUP_S)
    good = 0
    latencies: dict[tuple[int, int], list[float]] = {key: [] for key in thresholds}
    for route, phase, latency, done_at, _ in records:
        latencies[(route, phase)].append(latency)
        if done_at <= duration_s and latency <= thresholds[(route, phase)]:
            good += 1
    capacity = spec.effective_capacity(rate)
    ratio = max(
        (_p99(values) / thresholds[key] for key, values in latencies.items() if values),
        default=0.0,
    )
    return SimResult(
        spec.name,
        variant,
        seed,
        100.0 * good / duration_s / capacity,
        ratio,
        len(records),
        refused,
        {key: (_p99(values), thresholds[key]) for key, values in latencies.items()},
        traced,
    )


def _fields(cfg: ConcurrencyConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}


_TUNED: dict[int, int] = {}


def tuned_semaphore(seed: int = 1) -> int:
    """The semaphore's N with the best goodput on ``constant`` (10 s per N), as a user tunes."""
    if seed not in _TUNED:
        best = max(
            SEMAPHORE_GRID,
            key=lambda n: (
                simulate(
                    "constant", "semaphore", seed=seed, duration_s=10.0, semaphore_limit=n
                ).goodput_pct
            ),
        )
        _TUNED[seed] = best
    return _TUNED[seed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--variants", default="guarded,guarded_service,semaphore")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--trace", action="store_true", help="print the limit every 0.5 s")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'workload':<10} {'variant':<16} goodput % per seed          p99/2×unloaded  secs")
    for name in args.workloads.split(","):
        for variant in args.variants.split(","):
            t0 = time.perf_counter()
            results = [
                simulate(name, variant, seed=s, duration_s=args.duration, trace=args.trace)
                for s in seeds
            ]
            goodputs = " ".join(f"{r.goodput_pct:6.1f}" for r in results)
            ratios = " ".join(f"{r.p99_ratio:4.2f}" for r in results)
            print(
                f"{name:<10} {variant:<16} {goodputs:<28} {ratios:<15} "
                f"{time.perf_counter() - t0:5.1f}"
            )
            if args.trace:
                for t, route, limit in results[0].trace[::10]:
                    print(f"    t={t:6.2f} route {route} limit {limit:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
