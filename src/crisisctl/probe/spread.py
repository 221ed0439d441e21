"""A baseline's own spread: which p95 ratios a healthy triage run gives, and the factor's interval.

A healthy service measured twice never gives the same p95: triage samples a few requests, the
baseline a few more, at other moments of the machine's life. Judging "p95 now ÷ baseline p95"
against 1× (severity's P3 bound) turns that noise into alarms. This module estimates the noise
from the baseline's own samples, by bootstrap, and turns it into a confidence interval of the
degradation factor that `severity.classify()` grades (see severity.py).

The baseline is stored as *rounds*: several short measurements spread over time (see
`crisisctl baseline save --rounds`), so its spread covers how the service varies from one
moment to the next (the machine, background work), not only between requests of one burst.
`healthy_ratio_range()` asks: "if nothing changed, what ratio would a triage run of `n`
requests show against this baseline?" Each of `resamples` bootstrap draws (seeded, so the same
data give the same answer)

1. draws a healthy triage run: `n` requests with replacement from one baseline round picked at
   random, taken relative to that round's own p95 (its *shape*), times a *level* for the moment
   it runs at; the level is exp(m + s·√(1 + 1/R)·T): m and s are the mean and standard
   deviation of the R rounds' log p95, T follows Student's t with R − 1 degrees of freedom,
   the textbook prediction of one more round (few rounds give a wide range, as they should;
   the rounds' spread already holds some sampling noise, which the draw adds again: this errs
   toward no alarm). A single round has no level spread: its own p95 is the level;
   p95 of the run = ``window``;
2. redraws the baseline itself: its rounds with replacement, then as many requests from the
   pooled rounds as it holds (p95 = ``reference``), since the baseline's p95 is an estimate too;
3. keeps ``window ÷ reference``.

The central `confidence` share of those ratios, [L, U], is the healthy range. Inverting it
gives the interval of the factor f actually observed (p95 now ÷ baseline p95): the slowdown
factors θ under which f is a healthy ratio scaled by θ, i.e. **[f ÷ U, f ÷ L]**. Its low end
exceeds 1 exactly when f is above every healthy ratio but the top (1 − confidence) ÷ 2.

Without baseline samples (a baseline saved by an older crisisctl), the run's own requests stand
in for the baseline's shape: draws come from them, and the reference is redrawn at the size the
baseline recorded (`reference_n`); the caller says so in the report.

p95 is the nearest-rank percentile (the value at rank ⌈0.95 n⌉, as `stats.LatencyHistogram`).
The p95 of `n` draws with replacement from sorted values x₁ ≤ … ≤ x_m is drawn without
materialising the draws: draw k is x at index ⌈U_k·m⌉ for a uniform U_k, sorting is monotone,
so the r-th smallest draw is x at ⌈U₍ᵣ₎·m⌉, and the r-th smallest of n uniforms is
Beta(r, n − r + 1) distributed. One `betavariate` per p95 instead of n draws and a sort
(`resampled_quantile_reference` is the plain version, pinned to this one by a test).
Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Final

from crisisctl.severity import FactorInterval

#: the percentile triage grades
P95: Final = 0.95
#: two-sided confidence of the interval: 99 %, so that an unchanged service lands above the
#: healthy range in about 1 triage of 200 (issue: ≤ 1 false alarm in 50 runs)
DEFAULT_CONFIDENCE: Final = 0.99
DEFAULT_RESAMPLES: Final = 2000
DEFAULT_SEED: Final = 20260
#: fewer resamples than this cannot place a 99 % quantile
MIN_RESAMPLES: Final = 200
#: latencies below 1 µs (the histograms' resolution) count as 1 µs, so ratios stay finite
FLOOR_MS: Final = 0.001


def rank(n: int, q: float = P95) -> int:
    """The 1-based nearest rank of quantile `q` among `n` values: ⌈q·n⌉, at least 1."""
    return max(1, math.ceil(n * q - 1e-9))


def quantile(sorted_values: Sequence[float], q: float = P95) -> float:
    """Nearest-rank quantile of already sorted values (ValueError when empty)."""
    if not sorted_values:
        raise ValueError("no values to take a quantile of")
    return sorted_values[rank(len(sorted_values), q) - 1]


def resampled_quantile(
    sorted_values: Sequence[float], n: int, rng: random.Random, q: float = P95
) -> float:
    """Quantile `q` of `n` draws with replacement from `sorted_values` (the Beta shortcut)."""
    m = len(sorted_values)
    r = rank(n, q)
    u = rng.betavariate(r, n - r + 1)
    return sorted_values[min(m - 1, max(0, math.ceil(u * m) - 1))]


def resampled_quantile_reference(
    values: Sequence[float], n: int, rng: random.Random, q: float = P95
) -> float:
    """The plain version of `resampled_quantile`: draw `n` values, sort, take the rank."""
    return quantile(sorted(rng.choices(values, k=n)), q)


def healthy_ratio_range(
    rounds: Sequence[Sequence[float]],
    n: int,
    *,
    reference_n: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """(L, U): the central `confidence` range of (healthy run's p95 ÷ baseline p95).

    `rounds` are the baseline's latencies (ms) per round, `n` the size of the triage run;
    `reference_n` the size of the baseline's p95 (default: all its samples). Latencies below
    `FLOOR_MS` count as `FLOOR_MS`. ValueError on empty rounds, n < 1, a confidence outside
    (0, 1) or too few resamples.
    """
    kept = [sorted(max(FLOOR_MS, v) for v in r) for r in rounds if r]
    if not kept:
        raise ValueError("the baseline has no latency samples to take a spread from")
    if n < 1:
        raise ValueError(f"a triage run has at least 1 request, not {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"at least {MIN_RESAMPLES} resamples are needed, not {resamples}")
    ref_n = reference_n if reference_n is not None else sum(len(r) for r in kept)
    if ref_n < 1:
        raise ValueError(f"the baseline's p95 comes from at least 1 request, not {ref_n}")
    rng = random.Random(seed)
    count = len(kept)
    whole = sorted(v for r in kept for v in r) if count == 1 else None
    levels = [quantile(r) for r in kept]
    shapes = [[v / level for v in r] for r, level in zip(kept, levels, strict=True)]
    logs = [math.log(level) for level in levels]
    mean = sum(logs) / count
    spread = (
        math.sqrt(sum((x - mean) ** 2 for x in logs) / (count - 1) * (1 + 1 / count))
        if count > 1
        else 0.0
    )
    ratios: list[float] = []
    for _ in range(resamples):
        pick = rng.randrange(count)
        level = math.exp(mean + spread * _student_t(count - 1, rng)) if count > 1 else levels[0]
        window = level * resampled_quantile(shapes[pick], n, rng)
        # one round: it is the whole baseline; several: redraw which rounds it was made of
        pooled = whole or sorted(v for _ in range(count) for v in kept[rng.randrange(count)])
        ratios.append(window / resampled_quantile(pooled, ref_n, rng))
    ratios.sort()
    tail = (1.0 - confidence) / 2.0
    low = ratios[min(resamples - 1, math.floor(tail * resamples))]
    high = ratios[max(0, math.ceil((1.0 - tail) * resamples) - 1)]
    return low, high


def _student_t(freedom: int, rng: random.Random) -> float:
    """A Student's t variate: Z ÷ √(χ²ₖ ÷ k), χ²ₖ = Gamma(k/2, 2)."""
    return rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(freedom / 2, 2.0) / freedom)


def factor_interval(
    factor: float, healthy: tuple[float, float], confidence: float = DEFAULT_CONFIDENCE
) -> FactorInterval:
    """The observed `factor`'s interval [factor ÷ U, factor ÷ L] from the healthy range."""
    low, high = healthy
    return FactorInterval(low=factor / high, high=factor / low, confidence=confidence)


def family_confidence(confidence: float, tests: int) -> float:
    """Per-operation confidence so that `tests` operations together keep `confidence`.

    Triage grades the worst operation: with k operations each at 99 %, an unchanged service
    would raise about k times as many false alarms. Bonferroni: each gets 1 − (1 − c) ÷ k.
    """
    return 1.0 - (1.0 - confidence) / max(1, tests)


__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "P95",
    "factor_interval",
    "family_confidence",
    "healthy_ratio_range",
    "quantile",
    "rank",
    "resampled_quantile",
    "resampled_quantile_reference",
]
