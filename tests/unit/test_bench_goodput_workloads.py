"""The goodput benchmark's workloads send what they name and count goodput per route and phase.

`benchmarks/apps/goodput_workloads.py`: arrivals at the offered rate (evenly spaced or Poisson),
routes taking turns, a phase switch half-way for the route that turns slow, the effective
capacity that goodput is judged against, and the counting of good responses.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.goodput_workloads import WORKLOADS, Goodput, effective_capacity


def test_constant_arrivals_are_evenly_spaced_at_the_rate() -> None:
    arrivals = WORKLOADS["constant"].arrivals(600.0, 10.0, seed=1)
    assert len(arrivals) == 6000
    gaps = {round(b[0] - a[0], 9) for a, b in itertools.pairwise(arrivals)}
    assert gaps == {round(1 / 600, 9)}


def test_poisson_arrivals_keep_the_rate_with_exponential_gaps() -> None:
    arrivals = WORKLOADS["poisson"].arrivals(600.0, 30.0, seed=7)
    assert len(arrivals) == pytest.approx(18000, rel=0.03)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    # an exponential distribution's standard deviation equals its mean
    assert statistics.pstdev(gaps) == pytest.approx(statistics.mean(gaps), rel=0.05)
    assert arrivals == WORKLOADS["poisson"].arrivals(600.0, 30.0, seed=7)  # seeded


def test_two_routes_take_turns_and_the_second_half_is_the_slow_phase() -> None:
    w = WORKLOADS["two_route"]
    arrivals = w.arrivals(100.0, 10.0, seed=1)
    assert [route for _, route in arrivals[:4]] == [0, 1, 0, 1]
    assert w.phase_of(4.99, 10.0) == 0 and w.phase_of(5.0, 10.0) == 1
    assert WORKLOADS["constant"].phase_of(9.0, 10.0) == 0


def test_effective_capacity_caps_each_route_by_its_capacity_in_each_phase() -> None:
    w = WORKLOADS["two_route"]
    capacity = {(0, 0): 200.0, (1, 0): 800.0, (0, 1): 200.0, (1, 1): 40.0}
    # 600 req/s split in two: /a capped at 200 in both phases, /b 300 then 40
    assert effective_capacity(w, 600.0, capacity) == pytest.approx((200 + 300 + 200 + 40) / 2)
    assert effective_capacity(WORKLOADS["constant"], 600.0, {(0, 0): 200.0}) == 200.0


def test_goodput_counts_2xx_within_the_threshold_of_their_route_and_phase() -> None:
    w = WORKLOADS["two_route"]
    thresholds = {(0, 0): 0.010, (1, 0): 0.010, (0, 1): 0.010, (1, 1): 0.200}
    counter = Goodput(w, thresholds, duration_s=10.0, drain_s=1.0)
    counter(200, 0.005, 0, 1.0)  # good
    counter(200, 0.050, 1, 1.0)  # too slow for /b before the turn
    counter(200, 0.150, 1, 6.0)  # within /b's slow-phase threshold: good
    counter(503, 0.001, 0, 6.0)  # shed: never good
    assert counter.good == 2
    assert counter.done_in_schedule == 4 and counter.ok_in_schedule == 3
    assert counter.admitted[(1, 1)].count == 1 and counter.admitted[(1, 0)].count == 1
