"""The leak rule's trend finder: the longest recent stretch of a gauge that rises in a line.

A leak that began two intervals ago must be judged on its own points, not diluted by the flat
hours before it, so `recent_trend` fits every suffix of the window (the newest point always
included) and keeps the longest one that is a real, linear rise. A suffix of ``m`` points is a
trend when all of these hold:

1. **a line**: its least-squares slope is positive and its r² ≥ `min_r2`;
2. **not noise**: its rise (slope × its time span) is at least ``K(ν) = NOISE_K·(1 + 8/ν)``
   times the window's noise σ̂, where ν is the number of second differences
   ``d₂ = yᵢ₋₁ − 2yᵢ + yᵢ₊₁`` in the window. A straight line (flat or rising) cancels ``d₂``;
   for independent noise of deviation σ, ``d₂`` has deviation ``√6·σ``. σ̂ is the larger of
   ``median|d₂| / (0.6745·√6)`` (robust) and the root mean square of ``d₂ / √6`` without its
   largest value (stable in short windows; the largest is the change point's own ``d₂``).
   For pure noise the rise of ``m`` evenly spaced points has deviation
   ``σ·√(12(m−1)/(m(m+1)))`` (√2·σ for 3 points), so 8σ̂ is a 5.7σ event for three points;
   the ``8/ν`` term pays for σ̂'s own error in short windows (how often Gaussian noise still
   reads as a trend, by window length: ``benchmarks/watch_leak_noise.py``).
3. **not a step**: a line explains it better than one jump does — its residual sum of squares
   ``syy·(1 − r²)`` is below that of the best split into two flat levels,
   ``syy − max over splits of m₁·m₂/m·(ȳ₁ − ȳ₂)²``. A step up then flat (a cache filled once,
   a batch loaded) therefore never reads as a leak: the jump explains it exactly.

Suffixes are fitted from running sums taken newest-first (times relative to the newest point,
values relative to the newest value, so the sums stay small): every length up to 12 points,
then lengths about 10 % apart (a 180-point window tries 44), so "the longest" is exact for
a young trend and within 10 % for an old one; the step test (O(m))
runs only on suffixes that pass 1 and 2, longest first; σ̂ only when some suffix passes 1.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

__all__ = ["NOISE_K", "Trend", "noise_of", "recent_trend"]

#: a trend must rise at least this many noise deviations over its span
NOISE_K: Final = 8.0
#: suffixes of every length up to this are tried; longer ones about 10 % apart
EVERY_LENGTH_UP_TO: Final = 12
_MEDIAN_TO_SIGMA: Final = 1.0 / (0.674_489_750_196_081_7 * math.sqrt(6.0))


@dataclass(frozen=True, slots=True)
class Trend:
    """A recent linear rise: its slope (per second), r², how many points and since when."""

    slope: float
    r2: float
    samples: int
    since: float
    rise: float
    noise: float


def noise_of(values: Sequence[float]) -> float:
    """The noise deviation σ̂ of `values` around any straight line (see the module docstring);
    0 with fewer than three values."""
    if len(values) < 3:
        return 0.0
    d2 = sorted(
        abs(values[i - 1] - 2.0 * values[i] + values[i + 1]) for i in range(1, len(values) - 1)
    )
    robust = statistics.median(d2) * _MEDIAN_TO_SIGMA
    kept = d2[:-1] if len(d2) > 1 else d2
    stable = math.sqrt(math.fsum(x * x for x in kept) / len(kept) / 6.0)
    return max(robust, stable)


def _line_beats_step(values: Sequence[float], syy: float, r2: float) -> bool:
    """Whether a line fits `values` (evenly or not) better than two flat levels do."""
    m = len(values)
    total = math.fsum(values)
    best = 0.0
    head = 0.0
    for k in range(1, m):
        head += values[k - 1]
        mean_head = head / k
        mean_tail = (total - head) / (m - k)
        between = k * (m - k) / m * (mean_head - mean_tail) ** 2
        best = max(best, between)
    return syy * (1.0 - r2) < syy - best


def _lengths(shortest: int, n: int) -> Iterator[int]:
    """The suffix lengths tried: each up to `EVERY_LENGTH_UP_TO`, then about 10 % apart, and
    `n` (the whole window) last."""
    m = shortest
    while m < n:
        yield m
        m = m + 1 if m < EVERY_LENGTH_UP_TO else max(m + 1, int(m * 1.1))
    yield n


def recent_trend(
    points: Sequence[tuple[float, float]],
    *,
    min_samples: int,
    min_r2: float,
    noise_k: float = NOISE_K,
) -> Trend | None:
    """The longest suffix of `points` ((time, value), oldest first) of at least `min_samples`
    points that is a linear rise above the noise and not a step; None when there is none."""
    n = len(points)
    if n < max(3, min_samples):
        return None
    t_end, y_end = points[-1]
    # running sums from the newest point back (C loops: accumulate and map)
    ts = [t - t_end for t, _ in reversed(points)]
    ys = [y - y_end for _, y in reversed(points)]
    sum_t, sum_y = list(accumulate(ts)), list(accumulate(ys))
    sum_tt = list(accumulate(map(operator.mul, ts, ts)))
    sum_ty = list(accumulate(map(operator.mul, ts, ys)))
    sum_yy = list(accumulate(map(operator.mul, ys, ys)))
    fits: list[tuple[int, float, float, float]] = []  # (first index, slope, r², syy)
    for m in _lengths(max(3, min_samples), n):
        k = m - 1
        st, sy = sum_t[k], sum_y[k]
        sxx = sum_tt[k] - st * st / m
        sxy = sum_ty[k] - st * sy / m
        syy = sum_yy[k] - sy * sy / m
        if sxx <= 0 or syy <= 0 or sxy <= 0:
            continue
        r2 = min(1.0, sxy * sxy / (sxx * syy))
        if r2 >= min_r2:
            fits.append((n - m, sxy / sxx, r2, syy))
    if not fits:
        return None  # most series, most of the time: no rising line at all
    noise = noise_of([y for _, y in points])
    needed = noise_k * (1.0 + 8.0 / (n - 2)) * noise
    for first, slope, r2, syy in reversed(fits):  # longest first
        if slope * (t_end - points[first][0]) < needed:
            continue
        values = [y for _, y in points[first:]]
        if _line_beats_step(values, syy, r2):
            since = points[first][0]
            return Trend(slope, r2, n - first, since, slope * (t_end - since), noise)
    return None
