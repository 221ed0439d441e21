"""The pooled estimate of `guard_overhead.py`'s stored runs pairs rounds, pools them, and keeps
the runs as the unit of its interval (`benchmarks/apps/pooled.py`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.apps.pooled import paired_rounds, pooled_paired


def _round(
    variant: str, rnd: int, cpu: float, valid: bool = True, used: bool = True
) -> dict[str, Any]:
    return {"variant": variant, "round": rnd, "cpu_us_per_req": cpu, "valid": valid, "used": used}


def _run(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """A run whose round i measured the bare app at pairs[i][0] and the guard at pairs[i][1]."""
    rounds = []
    for i, (bare, guard) in enumerate(pairs, start=1):
        rounds += [_round("bare", i, bare), _round("guard", i, guard)]
    return {"rounds": rounds}


def test_rounds_are_paired_within_a_round_not_across_rounds() -> None:
    """The host drifts between rounds; only the same round's baseline cancels it."""
    run = _run([(50.0, 58.0), (70.0, 78.0), (60.0, 68.0)])
    assert paired_rounds(run, "guard", "bare") == [8.0, 8.0, 8.0]


def test_an_invalid_or_unused_attempt_is_left_out() -> None:
    run = _run([(50.0, 58.0), (60.0, 68.0)])
    run["rounds"] += [
        _round("guard", 1, 500.0, used=False),  # a disturbed attempt, repeated
        _round("bare", 3, 50.0),
        _round("guard", 3, 900.0, valid=False),  # non-2xx responses
        _round("guard", 4, 900.0),  # its baseline was not measured
    ]
    assert paired_rounds(run, "guard", "bare") == [8.0, 8.0]


def test_the_pooled_median_is_over_every_round_of_every_run() -> None:
    runs = [_run([(50.0, 51.0), (50.0, 52.0)]), _run([(50.0, 60.0), (50.0, 61.0), (50.0, 62.0)])]
    est = pooled_paired(runs, "guard", "bare", resamples=200)
    assert est is not None
    assert (est.median, est.rounds, est.runs) == (10.0, 5, 2)
    assert est.low <= est.median <= est.high


def test_a_run_without_the_pair_is_not_counted_and_none_means_none() -> None:
    runs = [_run([(50.0, 55.0)]), {"rounds": [_round("bare", 1, 50.0)]}]
    est = pooled_paired(runs, "guard", "bare", resamples=50)
    assert est is not None and est.runs == 1
    assert pooled_paired([{"rounds": []}], "guard", "bare") is None


def test_the_interval_is_the_same_every_time_it_is_printed() -> None:
    runs = [_run([(50.0, 50.0 + d) for d in (3.0, 9.0, 14.0)]), _run([(60.0, 62.0), (60.0, 75.0)])]
    assert pooled_paired(runs, "guard", "bare") == pooled_paired(runs, "guard", "bare")


def test_one_slow_run_widens_the_interval_as_one_run() -> None:
    """Runs are resampled first: five steady runs and one whose every round read 20 µs more
    give an interval that reaches toward the slow run, but whose median stays with the five."""
    steady = [_run([(60.0, 68.0 + 0.1 * i) for i in range(5)]) for _ in range(5)]
    slow = _run([(60.0, 88.0)] * 5)
    est = pooled_paired([*steady, slow], "guard", "bare", resamples=500)
    assert est is not None
    assert 8.0 <= est.median <= 8.5
    assert est.high > 8.5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.floats(20, 200), st.floats(-50, 50)), min_size=1, max_size=6).map(
            lambda rows: _run([(bare, bare + added) for bare, added in rows])
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_interval_lies_within_the_paired_differences(runs: list[dict[str, Any]]) -> None:
    est = pooled_paired(runs, "guard", "bare", resamples=100)
    assert est is not None
    diffs = [d for run in runs for d in paired_rounds(run, "guard", "bare")]
    assert min(diffs) - 1e-9 <= est.low <= est.high <= max(diffs) + 1e-9
    assert est.rounds == len(diffs) and est.runs == len(runs)
