"""What Prometheus will say about a rule's synthetic series (``promsynth``), sample by sample.

`conditions(syn, alerts)` computes, at every sample, whether each generated alert's condition
holds — True, False, or None when the figures lie within a small margin of a threshold (or
where watch and Prometheus knowingly differ: see docs/rules.md), so that an expectation is
only ever stated where the answer is clear. The figures follow PromQL's semantics on evenly
spaced samples: a ``[w]`` range holds the samples in [t − w, t]; counters grow linearly inside
a sample interval, so ratios of increases over the same range are exact (Prometheus'
extrapolation scales both sides alike) and an event count is exact up to one interval.

`firing(conds, hold, keep)` turns conditions into alert states with ``for`` and
``keep_firing_for``: firing when the condition held at every sample of the last ``for``,
not firing when it failed at every sample of the last ``keep_firing_for``, else unknown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from crisisctl.watch.promrules import GeneratedAlert, needed_samples
from crisisctl.watch.promsynth import Synthetic, primary_source, synthesize
from crisisctl.watch.rules import least_squares
from crisisctl.watch.rules_eval import go_float
from crisisctl.watch.rules_spec import (
    AnomalyRule,
    BurnRateRule,
    LeakRule,
    ThresholdRule,
)

__all__ = ["MARGIN", "burn_breach", "conditions", "firing"]

#: a figure within this relative distance of its threshold is not judged
MARGIN = 0.05
Verdict = bool | None


def _above(value: float | None, bound: float, strict: bool = True) -> Verdict:
    """value > bound (≥ when not strict), None near the bound."""
    if value is None or math.isnan(value):
        return False
    if abs(value - bound) <= MARGIN * max(abs(bound), 1e-9):
        return None
    return value > bound


def _all(*verdicts: Verdict) -> Verdict:
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


def _start(k: int, seconds: float, interval: float) -> int:
    """The first sample of a ``[seconds]`` range ending at sample k."""
    return max(0, k - math.floor(seconds / interval + 1e-9))


def _series(syn: Synthetic, name: str, **extra: str) -> list[float]:
    return syn.watch[syn.watch_key(name, **extra)]


# -- per kind ----------------------------------------------------------------------------------
def _threshold(syn: Synthetic, rule: ThresholdRule, k: int) -> float | None:
    interval = syn.interval
    values = _series(syn, rule.metric)
    if rule.ratio_to is not None:
        j = _start(k, rule.window, interval)
        whole = _series(syn, rule.ratio_to)
        if k == j or whole[k] - whole[j] <= 0:
            return None
        return (values[k] - values[j]) / (whole[k] - whole[j])
    if rule.rate is not None:
        j = _start(k, rule.rate, interval)
        return None if k == j else (values[k] - values[j]) / ((k - j) * interval)
    source = primary_source(rule)
    if source is not None and source.quantile is not None:
        j = _start(k, rule.window, interval)
        if k - j < 1 or len(set(values[j : k + 1])) > 1:
            return math.nan  # the histogram's rate window mixes two phases: not judged
    return values[k]


def _burn(syn: Synthetic, rule: BurnRateRule, k: int) -> list[Verdict]:
    budget = 1.0 - rule.objective
    if rule.latency_below is not None:
        total = _series(syn, rule.total_latency)
        good = _series(syn, rule.buckets, le=go_float(rule.latency_below))
        bad = [t - g for t, g in zip(total, good, strict=True)]
    else:
        total, bad = _series(syn, rule.total), _series(syn, rule.errors)

    def window(seconds: float) -> tuple[float | None, float, int]:
        j = _start(k, seconds, syn.interval)
        grown = total[k] - total[j]
        ratio = (bad[k] - bad[j]) / grown if k > j and grown > 0 else None
        return ratio, grown, k - j

    out: list[Verdict] = []
    for pair in rule.windows:
        limit = pair.factor * budget
        long_ratio, events, samples = window(pair.long)
        short_ratio, _, _ = window(pair.short)
        if events >= rule.min_events:
            enough: Verdict = True
        elif samples and events * (samples + 1) / samples < rule.min_events * (1 - MARGIN):
            enough = False
        else:
            enough = None
        out.append(_all(_above(long_ratio, limit), _above(short_ratio, limit), enough))
    return out


def _anomaly_z(syn: Synthetic, rule: AnomalyRule, k: int) -> Verdict | float:
    """The z-score at sample k (False when there is none, None near a floor)."""
    interval = syn.interval
    values = _series(syn, rule.metric)
    if rule.rate is not None:
        r = math.floor(rule.rate / interval + 1e-9)
        if k < r or r < 1:
            return False
        value = (values[k] - values[k - r]) / rule.rate
        w = math.floor(rule.window / interval + 1e-9)
        points = [
            (values[m] - values[m - 1]) / interval for m in range(max(1, k - r - w + 1), k - r + 1)
        ]
        span = rule.window
    else:
        w = math.floor(rule.window / interval + 1e-9)
        value = values[k]
        points = values[max(0, k - w) : k]
        span = rule.window - 1e-3
    n = len(points)
    if n < max(2, needed_samples(rule, interval, span)):
        return False
    mean = statistics.fmean(points)
    deviation = statistics.stdev(points)
    floor = max(rule.min_deviation, rule.relative_deviation * abs(mean), 1e-12)
    enough = _above(deviation, floor)
    if enough is not True:
        return enough if enough is None else False
    return (value - mean) / deviation


def _anomaly(syn: Synthetic, rule: AnomalyRule, k: int, bounds: Sequence[float]) -> list[Verdict]:
    z = _anomaly_z(syn, rule, k)
    if z is None or isinstance(z, bool):
        return [z for _ in bounds]
    if rule.direction == "up":
        return [_above(z, b) if z > 0 else False for b in bounds]
    if rule.direction == "down":
        return [_above(-z, b) if z < 0 else False for b in bounds]
    return [_above(abs(z), b) for b in bounds]


def _leak(syn: Synthetic, rule: LeakRule, k: int, count: int) -> list[Verdict]:
    interval = syn.interval
    values = _series(syn, rule.metric)
    j = _start(k, rule.window, interval)
    phase_starts = [0, *syn.phases]
    inside = any(a <= j and k < b for a, b in zip(phase_starts, syn.phases, strict=False))
    if not inside:
        return [None] * count  # watch fits the recent stretch, Prometheus the whole window
    points = [(m * interval, values[m]) for m in range(j, k + 1)]
    fit = least_squares(points)
    variance = statistics.pvariance([v for _, v in points]) if len(points) > 1 else 0.0
    if fit is None or fit[0] <= 0 or variance <= 0:
        return [False] * count
    n = len(points)
    r2 = fit[0] ** 2 * (n * n - 1) * interval * interval / 12 / variance
    eta = max(0.0, (rule.limit - values[k]) / fit[0])
    warm = k - _start(k, rule.window + rule.warmup, interval) + 1
    ready = warm >= rule.warmup / interval + rule.min_samples
    held = _all(_above(r2, rule.min_r2), ready)
    out = [_all(_above(rule.horizon, eta), held)]
    if count > 1:
        out.append(_all(_above(rule.urgent, eta), held))
    return out


def conditions(syn: Synthetic, alerts: Sequence[GeneratedAlert]) -> list[list[Verdict]]:
    """Per sample, per alert of the rule (in `alerts` order): does its condition hold?"""
    rule = syn.rule
    out: list[list[Verdict]] = []
    for k in range(syn.steps):
        if isinstance(rule, ThresholdRule):
            value = _threshold(syn, rule, k)
            row: list[Verdict] = []
            for alert in alerts:
                limit = float(alert.expr.rsplit(" ", 1)[1])
                if value is not None and math.isnan(value):
                    row.append(None)
                elif rule.below is not None:
                    row.append(_above(-value, -limit) if value is not None else False)
                else:
                    row.append(_above(value, limit))
            out.append(row)
        elif isinstance(rule, BurnRateRule):
            out.append(_burn(syn, rule, k))
        elif isinstance(rule, AnomalyRule):
            bounds = [rule.z, max(rule.z, rule.critical_z)]
            out.append(_anomaly(syn, rule, k, bounds))
        elif isinstance(rule, LeakRule):
            out.append(_leak(syn, rule, k, len(alerts)))
        else:
            out.append([_series(syn, "up")[k] == 0])
    return out


def firing(conds: Sequence[Verdict], k: int, hold_steps: int, keep_steps: int) -> Verdict:
    """Whether an alert fires at sample k, given its condition at every sample."""
    recent = conds[max(0, k - hold_steps) : k + 1]
    if k >= hold_steps and all(c is True for c in recent):
        return True
    if all(c is False for c in conds[max(0, k - keep_steps) : k + 1]):
        return False
    return None


def burn_breach(
    rule: BurnRateRule,
    interval: float,
    service: str,
    alerts: Sequence[GeneratedAlert],
    *,
    cap: int = 4096,
) -> int:
    """The shortest breach (in samples, doubling from 8) after which every tier that can fire
    does, through its ``for``: a tier whose threshold is ≥ 1 (all events bad) never can."""
    hold = math.ceil(rule.for_ / interval - 1e-9)
    fireable = [i for i, w in enumerate(rule.windows) if w.factor * (1 - rule.objective) < 0.95]
    steps = 8
    while steps < cap:
        syn = synthesize(rule, interval, service, breach_steps=steps)
        conds = conditions(syn, alerts)
        end = syn.phases[1] - 1
        column = [[row[i] for row in conds] for i in fireable]
        if all(firing(c, end, hold, 0) for c in column):
            return steps
        steps *= 2
    return cap
