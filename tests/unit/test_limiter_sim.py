"""The virtual-time simulation of the concurrency limit (`benchmarks/apps/limiter_sim.py`): the
guard's goodput and admitted p99 on each goodput workload, deterministic per seed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.limiter_sim import VirtualTimeLoop, simulate


def test_the_virtual_loop_jumps_to_the_next_timer() -> None:
    loop = VirtualTimeLoop()
    try:
        start = time.perf_counter()
        loop.run_until_complete(asyncio.sleep(3600.0))
        assert loop.time() == pytest.approx(3600.0)
        assert time.perf_counter() - start < 1.0
    finally:
        loop.close()


def test_the_same_seed_gives_the_same_figures() -> None:
    one = simulate("poisson", seed=3, duration_s=5.0)
    two = simulate("poisson", seed=3, duration_s=5.0)
    assert (one.goodput_pct, one.p99_ratio, one.admitted) == (
        two.goodput_pct,
        two.p99_ratio,
        two.admitted,
    )


@pytest.mark.parametrize(
    ("workload", "goodput_pct", "p99_ratio"),
    [
        ("constant", 90.0, 1.0),
        ("poisson", 89.0, 1.05),
        # a limit pinned at one by the fast mode's reference served 88 %
        ("bimodal", 91.0, 1.0),
    ],
)
def test_the_guard_keeps_goodput_on_one_route_workloads(
    workload: str, goodput_pct: float, p99_ratio: float
) -> None:
    for seed in (1, 2):
        result = simulate(workload, seed=seed, duration_s=20.0)
        assert result.goodput_pct >= goodput_pct, result
        assert result.p99_ratio <= p99_ratio, result


def test_a_route_turning_slow_costs_only_its_own_goodput() -> None:
    per_route = simulate("two_route", seed=1, duration_s=20.0)
    service = simulate("two_route", "guarded_service", seed=1, duration_s=20.0)
    assert per_route.goodput_pct >= 88.0
    assert service.goodput_pct < 60.0  # one limit for both: the slow route starves /a
    slow_route_p99, threshold = per_route.p99_by_key[(1, 1)]
    assert slow_route_p99 <= threshold


def test_the_poisson_p99_miss_is_the_overload_onset_not_the_steady_state() -> None:
    # docs/benchmarks.md ("Poisson: p99"): in a 12 s run (the real benchmark's length) the
    # few dozen requests admitted while the limit falls from its warm-up level are over 1 %
    # of the run, so they set its p99; after the first second the p99 keeps the target.
    # If a change to the limiter ends the miss, the explanation there needs updating too.
    from benchmarks.apps.limiter_diagnosis import run

    result = run(seed=1, duration_s=12.0)
    over, at_onset = result.over(), result.over(steady=False)
    assert result.p99_ratio > 1.0, result.p99_ratio
    assert len(at_onset) >= 0.75 * len(over), (len(at_onset), len(over))
    assert result.steady_p99_ratio() <= 1.0, result.steady_p99_ratio()
