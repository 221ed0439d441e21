"""The rules' arithmetic, as pure functions of numbers (no store, no clock, no I/O).

* threshold: `breach_severity_of` — value ÷ bound graded through the shared
  ``severity.BREACH_RATIO_THRESHOLDS`` (the seeds' > 5 critical, > 3 high, > 2 medium, else
  low), mapped to P0, P1, P2, P3;
* SLO burn rate: `burn_rate` (bad share ÷ error budget), `budget_spent` (share of the whole
  period's budget a window at that rate consumes: 14.4× over 1 h of a 30-day SLO is 2 %) and
  `judge_burn` (the multiwindow rule: both windows above the factor, a minimum of events);
* anomaly: `zscore` against a history, None while the deviation is tiny or samples sparse;
* leak: `least_squares` (slope, intercept, r²) and `time_to_limit`, `format_eta` ("~3 h 10 m");
  which recent stretch of the window is a trend is ``trend``'s job.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crisisctl.severity import Severity, breach_severity
from crisisctl.watch.model import Labels

__all__ = [
    "BurnJudgement",
    "BurnPair",
    "Finding",
    "breach_severity_of",
    "budget_spent",
    "burn_rate",
    "format_eta",
    "judge_burn",
    "least_squares",
    "step_worse",
    "time_to_limit",
    "zscore",
]

#: the seeds' breach names → the project's severities
_BREACH_TO_SEVERITY = {
    "critical": Severity.P0,
    "high": Severity.P1,
    "medium": Severity.P2,
    "low": Severity.P3,
}


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition holds for one label set, now: how bad, the figures, one sentence."""

    labels: Labels
    service: str
    severity: Severity
    value: float | None
    threshold: float | None
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)


def breach_severity_of(value: float, bound: float, *, below: bool = False) -> Severity:
    """The severity of `value` breaching `bound` (> bound, or < bound when `below`).

    The breach ratio is value ÷ bound (bound ÷ value when `below`; a value of 0 under a
    positive bound is the worst). OK when the bound is not breached.
    """
    if below:
        if value >= bound:
            return Severity.OK
        if value <= 0:
            return Severity.P0
        return _BREACH_TO_SEVERITY[breach_severity(bound, value)]
    if value <= bound:
        return Severity.OK
    return _BREACH_TO_SEVERITY[breach_severity(value, bound)]


def step_worse(severity: Severity) -> Severity:
    """One step worse (P3 → P2 … P0 stays P0)."""
    return Severity(min(int(severity) + 1, int(Severity.P0)))


def burn_rate(bad: float, total: float, objective: float) -> float | None:
    """How fast the error budget burns: (bad ÷ total) ÷ (1 − objective); None without events.

    1.0 spends exactly the budget over the SLO period; 14.4 spends a 30-day budget in 50 h.
    """
    if total <= 0:
        return None
    return (bad / total) / (1.0 - objective)


def budget_spent(rate: float, window_s: float, period_s: float) -> float:
    """The share of the period's error budget a window burning at `rate` consumes."""
    return rate * window_s / period_s


@dataclass(frozen=True, slots=True)
class BurnPair:
    """One multiwindow pair's inputs: bad and total events in the long and short windows."""

    long_s: float
    short_s: float
    factor: float
    severity: Severity
    long_bad: float | None
    long_total: float | None
    short_bad: float | None
    short_total: float | None


@dataclass(frozen=True, slots=True)
class BurnJudgement:
    """The worst pair that fires (severity OK when none does) and every pair's figures."""

    severity: Severity
    fired: BurnPair | None
    long_rate: float | None
    short_rate: float | None
    pairs: tuple[dict[str, Any], ...]


def judge_burn(pairs: Sequence[BurnPair], objective: float, min_events: int) -> BurnJudgement:
    """The multiwindow, multi-burn-rate rule: a pair fires when both its long and its short
    window burn faster than its factor and the long window saw at least `min_events` events;
    the most severe firing pair wins (the first one listed among equals)."""
    best: tuple[BurnPair, float, float] | None = None
    figures = []
    for pair in pairs:
        long_rate = _rate(pair.long_bad, pair.long_total, objective)
        short_rate = _rate(pair.short_bad, pair.short_total, objective)
        enough = (pair.long_total or 0.0) >= min_events
        fires = (
            enough
            and long_rate is not None
            and short_rate is not None
            and long_rate > pair.factor
            and short_rate > pair.factor
        )
        figures.append(
            {
                "long_s": pair.long_s,
                "short_s": pair.short_s,
                "factor": pair.factor,
                "long_burn": long_rate,
                "short_burn": short_rate,
                "long_events": pair.long_total,
                "fires": fires,
            }
        )
        better = best is None or pair.severity > best[0].severity
        if fires and better and long_rate is not None and short_rate is not None:
            best = (pair, long_rate, short_rate)
    if best is None:
        return BurnJudgement(Severity.OK, None, None, None, tuple(figures))
    return BurnJudgement(best[0].severity, best[0], best[1], best[2], tuple(figures))


def _rate(bad: float | None, total: float | None, objective: float) -> float | None:
    if bad is None or total is None:
        return None
    return burn_rate(bad, total, objective)


def zscore(
    history: Sequence[float],
    value: float,
    *,
    min_samples: int,
    min_deviation: float = 0.0,
    relative_deviation: float = 0.0,
) -> tuple[float, float, float] | None:
    """(z, mean, deviation) of `value` against `history`; None when fewer than `min_samples`
    or the deviation is under max(min_deviation, relative_deviation × |mean|, tiny)."""
    n = len(history)
    if n < min_samples or n < 2:
        return None
    mean = math.fsum(history) / n
    gaps = [x - mean for x in history]
    deviation = math.sqrt(math.fsum(map(operator.mul, gaps, gaps)) / (n - 1))
    floor = max(min_deviation, relative_deviation * abs(mean), 1e-12)
    if deviation < floor:
        return None
    return (value - mean) / deviation, mean, deviation


def least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float, float] | None:
    """(slope, intercept, r²) of the least-squares line through (t, y) points; None with
    fewer than two distinct times. r² is 1.0 for a perfectly flat or perfect line."""
    n = len(points)
    if n < 2:
        return None
    t0 = points[0][0]
    times = [t - t0 for t, _ in points]
    values = [y for _, y in points]
    mean_t = math.fsum(times) / n
    mean_y = math.fsum(values) / n
    dt = [t - mean_t for t in times]
    dy = [y - mean_y for y in values]
    sxx = math.fsum(map(operator.mul, dt, dt))
    if sxx <= 0:
        return None
    sxy = math.fsum(map(operator.mul, dt, dy))
    syy = math.fsum(map(operator.mul, dy, dy))
    slope = sxy / sxx
    intercept = mean_y - slope * (mean_t + t0)
    r2 = 1.0 if syy <= 0 else min(1.0, max(0.0, (sxy * sxy) / (sxx * syy)))
    return slope, intercept, r2


def time_to_limit(current: float, slope_per_s: float, limit: float) -> float | None:
    """Seconds until a value growing at `slope_per_s` from `current` reaches `limit`
    (0 when already there; None when it is not growing)."""
    if current >= limit:
        return 0.0
    if slope_per_s <= 0:
        return None
    return (limit - current) / slope_per_s


def format_eta(seconds: float) -> str:
    """A duration as people read it in an alert: "~3 h 10 m", "~12 m", "~45 s", "~2 d 4 h"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"~{s} s"
    minutes = s // 60
    if minutes < 60:
        return f"~{minutes} m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"~{hours} h {minutes} m" if minutes else f"~{hours} h"
    days, hours = divmod(hours, 24)
    return f"~{days} d {hours} h" if hours else f"~{days} d"
