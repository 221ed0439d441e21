"""Arrival schedules: constant and Poisson arrivals, and one schedule split between processes."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.load.plan import share
from crisisctl.load.scenario import OpenModel, Scenario
from crisisctl.load.schedule import RateSchedule, part_of

SCHEDULES = {
    "constant": RateSchedule.constant(250.0, 2.0),
    "staged": RateSchedule.from_stages(0.0, [(1.0, 300.0), (0.5, 300.0), (1.0, 50.0)]),
}


def open_scenario(arrival: str, rate: float = 100.0, seed: int | None = 7) -> Scenario:
    return Scenario.model_validate(
        {
            "base_url": "http://127.0.0.1:9",
            "model": {
                "type": "open", "rate": rate, "duration": "2s", "connections": 12,
                "arrival": arrival,
            },
            "operations": [{"path": "/"}],
            "seed": seed,
        }
    )  # fmt: skip


def process_offsets(scenario: Scenario, count: int) -> list[list[float]]:
    """What each of `count` engine processes sends: its share, its part of the arrivals."""
    out = []
    for index in range(count):
        model = share(scenario, index, count).model
        assert isinstance(model, OpenModel)
        times = model.schedule().arrivals(model.arrival, scenario.seed)
        out.append(list(part_of(times, index, count)))
    return out


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_processes_parts_together_are_the_one_schedule(arrival: str, count: int) -> None:
    scenario = open_scenario(arrival)
    assert isinstance(scenario.model, OpenModel)
    whole = list(scenario.model.schedule().arrivals(arrival, scenario.seed))
    parts = process_offsets(scenario, count)
    assert sorted(t for part in parts for t in part) == whole
    for index, part in enumerate(parts):
        assert part == whole[index::count]  # arrivals index, index + N, …
    # each process keeps its share of the connections; the rate is not divided by N copies
    shares = [share(scenario, i, count).model for i in range(count)]
    assert all(isinstance(m, OpenModel) and m.rate == 100.0 for m in shares)
    assert sum(m.connections for m in shares if isinstance(m, OpenModel)) >= 12


@pytest.mark.parametrize("count", [2, 4])
def test_processes_interleave_their_arrivals_instead_of_sending_bursts(count: int) -> None:
    merged = sorted(t for part in process_offsets(open_scenario("constant"), count) for t in part)
    gaps = [b - a for a, b in itertools.pairwise(merged)]
    assert len(merged) == 200  # 100/s for 2 s in total, not per process
    # every arrival 10 ms after the one before: no two processes send at the same instant
    assert min(gaps) == pytest.approx(0.01) and max(gaps) == pytest.approx(0.01)
    firsts = [part[0] for part in process_offsets(open_scenario("constant"), count)]
    assert firsts == pytest.approx([i * 0.01 for i in range(count)])


@given(
    kind=st.sampled_from(["constant", "poisson"]),
    which=st.sampled_from(sorted(SCHEDULES)),
    count=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_any_split_of_any_schedule_loses_and_repeats_nothing(
    kind: str, which: str, count: int, seed: int
) -> None:
    schedule = SCHEDULES[which]
    whole = list(schedule.arrivals(kind, seed))
    parts = [list(part_of(schedule.arrivals(kind, seed), i, count)) for i in range(count)]
    assert sorted(t for part in parts for t in part) == whole
    assert [len(p) for p in parts] == [len(whole[i::count]) for i in range(count)]


@given(rate=st.floats(20.0, 5_000.0), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_poisson_arrivals_keep_the_mean_rate_with_exponential_gaps(rate: float, seed: int) -> None:
    duration = 4_000.0 / rate  # about 4,000 arrivals whatever the rate
    times = list(RateSchedule.constant(rate, duration).arrivals("poisson", seed))
    expected = rate * duration
    assert abs(len(times) - expected) < 5 * math.sqrt(expected)  # Poisson: sd = √n
    assert all(0.0 < t < duration for t in times)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(g > 0 for g in gaps)
    mean = statistics.fmean(gaps)
    assert abs(mean * rate - 1.0) < 0.1  # mean gap 1 ÷ rate (5 sd at n ≈ 4,000)
    assert 0.9 < statistics.pstdev(gaps) / mean < 1.1  # exponential: sd = mean


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_poisson_arrivals_follow_a_ramp(seed: int) -> None:
    schedule = RateSchedule.from_stages(0.0, [(4.0, 2_000.0)])  # 0 → 2,000/s: 4,000 arrivals
    times = list(schedule.arrivals("poisson", seed))
    assert abs(len(times) - 4_000) < 5 * math.sqrt(4_000)
    early = sum(1 for t in times if t < 2.0)  # a quarter of the area lies in the first half
    assert abs(early - 1_000) < 5 * math.sqrt(1_000)
    assert times == sorted(times)


def test_a_seed_reproduces_poisson_arrivals_and_constant_ones_are_even() -> None:
    schedule = RateSchedule.constant(100.0, 1.0)
    assert list(schedule.arrivals("poisson", 3)) == list(schedule.arrivals("poisson", 3))
    assert list(schedule.arrivals("poisson", 3)) != list(schedule.arrivals("poisson", 4))
    assert list(schedule.arrivals("constant")) == list(schedule.send_times())
    with pytest.raises(ValueError, match="constant or poisson"):
        schedule.arrivals("bursty")
    with pytest.raises(ValueError):
        part_of(schedule.send_times(), 2, 2)


def test_scenario_and_quick_form_take_the_arrival_kind(tmp_path: Path) -> None:
    from crisisctl.cli.load import quick_scenario

    assert isinstance(open_scenario("poisson").model, OpenModel)
    opts = {
        "rate": 50.0, "users": None, "duration": "1s", "stage": None, "connections": None,
        "timeout": None, "method": None, "header": None, "body": None, "body_file": None,
        "ramp_up": None, "think": None, "think_dist": None, "seed": 5, "arrival": "poisson",
    }  # fmt: skip
    model = quick_scenario("http://127.0.0.1:9/", opts).model
    assert isinstance(model, OpenModel) and model.arrival == "poisson"
    with pytest.raises(ValueError, match="--arrival"):
        quick_scenario("http://127.0.0.1:9/", dict(opts, arrival="bursty"))
    with pytest.raises(ValueError, match="--arrival applies to the open model"):
        quick_scenario("http://127.0.0.1:9/", dict(opts, rate=None, users=2))
