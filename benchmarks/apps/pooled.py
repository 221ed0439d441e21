"""One estimate from the rounds of every stored run: paired per round, pooled, with its interval.

`guard_overhead.py` measures each variant once per round, rounds interleaved, and a run's
figure is a median over its five rounds. On a shared host whose speed swings between rounds,
one run's median moves by several µs (2026-12-07: the calibration, exactly 10 µs of work, read
between +2.0 and +13.0 in five runs of the same code), and the median of a handful of run
medians cannot say on which side of a 10 µs target a figure lies.

This module asks the stored rounds directly. Within a run, a variant and its baseline measured
in the same round are paired (their difference cancels the drift between rounds); the
differences of every round of every run are pooled, and their median is the estimate. Its
interval comes from a two-level bootstrap that keeps the structure of the data: resample the
runs, then the rounds within each run drawn, so that a run whose whole host was slow weighs as
one run, not as five independent rounds. The generator is seeded: the same stored runs always
print the same interval.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Pooled", "paired_rounds", "pooled_paired"]

#: bootstrap resamples (enough for a 95 % interval to move by less than 0.1 µs between seeds)
RESAMPLES = 4000
SEED = 20261207


@dataclass(frozen=True)
class Pooled:
    """The median of the pooled paired differences, its 95 % interval, and what it rests on."""

    median: float
    low: float
    high: float
    rounds: int
    runs: int


def paired_rounds(run: dict[str, Any], name: str, other: str) -> list[float]:
    """A stored run's per-round differences, `name`'s CPU µs per request minus `other`'s, for
    the rounds where both were measured validly (a disturbed attempt that was repeated counts
    once, as the run itself used it)."""
    used = [r for r in run.get("rounds", []) if r.get("valid") and r.get("used")]
    base = {r["round"]: r["cpu_us_per_req"] for r in used if r["variant"] == other}
    return [
        r["cpu_us_per_req"] - base[r["round"]]
        for r in used
        if r["variant"] == name and r["round"] in base
    ]


def pooled_paired(
    runs: Sequence[dict[str, Any]], name: str, other: str, resamples: int = RESAMPLES
) -> Pooled | None:
    """The pooled paired difference `name` − `other` over `runs` (None: no paired round)."""
    per_run = [diffs for run in runs if (diffs := paired_rounds(run, name, other))]
    if not per_run:
        return None
    pooled = [d for diffs in per_run for d in diffs]
    rng = random.Random(SEED)
    estimates = []
    for _ in range(resamples):
        sample: list[float] = []
        for diffs in rng.choices(per_run, k=len(per_run)):
            sample.extend(rng.choices(diffs, k=len(diffs)))
        estimates.append(statistics.median(sample))
    estimates.sort()
    low = estimates[int(0.025 * (resamples - 1))]
    high = estimates[int(0.975 * (resamples - 1))]
    return Pooled(statistics.median(pooled), low, high, len(pooled), len(per_run))
