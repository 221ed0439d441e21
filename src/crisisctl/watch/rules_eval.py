"""Each rule kind read against the series store at one instant: the label sets whose condition
holds now, as `rules.Finding` values (the arithmetic is in ``rules``; state over time, `for`
and `keep_firing_for`, is in ``engine``).

A series whose newest sample is older than `STALE_INTERVALS` scrape intervals is not judged by
threshold, anomaly or leak rules: its target stopped answering, which ``target_down`` reports.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Final, cast

from prometheus_client.utils import floatToGoString as _go_float

from crisisctl.severity import Severity
from crisisctl.watch.model import Labels, SeriesKey
from crisisctl.watch.rules import (
    BurnPair,
    Finding,
    breach_severity_of,
    format_eta,
    judge_burn,
    step_worse,
    time_to_limit,
    zscore,
)
from crisisctl.watch.rules_spec import (
    AnomalyRule,
    BurnRateRule,
    LeakRule,
    RuleSpec,
    TargetDownRule,
    ThresholdRule,
)
from crisisctl.watch.store import Retention, Series, SeriesStore
from crisisctl.watch.trend import recent_trend

__all__ = ["STALE_INTERVALS", "evaluate_rule", "retention_for", "rule_reads"]

STALE_INTERVALS: Final = 3.0
_SEASON_S: Final = {"none": 0.0, "day": 86_400.0, "week": 604_800.0}
UP: Final = "up"
#: Prometheus' number format (Go floats), as the guard writes its `le` labels
go_float = cast(Callable[[float], str], _go_float)


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"


def _service(labels: Labels) -> str:
    return next((v for k, v in labels if k == "service"), "")


def _fresh(series: Series, now: float, interval_s: float) -> tuple[float, float] | None:
    latest = series.latest()
    if latest is None or now - latest[0] > STALE_INTERVALS * interval_s:
        return None
    return latest


# -- threshold ---------------------------------------------------------------------------------
def _threshold_value(
    rule: ThresholdRule, store: SeriesStore, key: SeriesKey, series: Series, now: float
) -> float | None:
    if _fresh(series, now, store.interval_s) is None:
        return None
    if rule.ratio_to is not None:
        other = store.get(SeriesKey(rule.ratio_to, key.labels))
        if other is None:
            return None
        part = series.increase(now - rule.window, now)
        whole = other.increase(now - rule.window, now)
        if part is None or whole is None or whole <= 0:
            return None
        return part / whole
    if rule.rate is not None:
        grown = series.increase(now - rule.rate, now)
        return None if grown is None else grown / rule.rate
    latest = series.latest()
    return None if latest is None else latest[1]


def _threshold(rule: ThresholdRule, store: SeriesStore, now: float) -> list[Finding]:
    below = rule.below is not None
    bound = rule.below if below else rule.above
    assert bound is not None
    out = []
    for key in store.select(rule.metric, rule.match):
        series = store.get(key)
        if series is None:
            continue
        value = _threshold_value(rule, store, key, series, now)
        if value is None or (value >= bound if below else value <= bound):
            continue
        if rule.severity is not None:
            severity = Severity.parse(rule.severity)
        else:
            severity = breach_severity_of(value, bound, below=below)
        what = rule.metric if rule.ratio_to is None else f"{rule.metric} / {rule.ratio_to}"
        ratio: float | None = None  # a bound ≤ 0 (fixed severity) has no breach ratio
        if bound > 0:
            ratio = (bound / value if value > 0 else float("inf")) if below else value / bound
        finite = ratio is not None and ratio != float("inf")
        shown = f" ({_fmt(ratio)}× the bound)" if finite and ratio is not None else ""
        summary = rule.summary or (
            f"{what} is {_fmt(value)}, {'under' if below else 'over'} {_fmt(bound)}{shown}"
        )
        evidence = {"metric": what, "value": value, "bound": bound, "breach_ratio": ratio}
        out.append(
            Finding(key.labels, _service(key.labels), severity, value, bound, summary, evidence)
        )
    return out


# -- burn rate ---------------------------------------------------------------------------------
def _sum_increase(series: Iterable[Series], start: float, end: float) -> float | None:
    total: float | None = None
    for one in series:
        grown = one.increase(start, end)
        if grown is not None:
            total = grown if total is None else total + grown
    return total


def _group(labels: Labels, by: Sequence[str]) -> Labels:
    return tuple((k, v) for k, v in labels if k in by)


def _burn(rule: BurnRateRule, store: SeriesStore, now: float) -> list[Finding]:
    if rule.latency_below is not None:
        le = go_float(rule.latency_below)
        total_name, good_name, bad_name = rule.total_latency, rule.buckets, None
        good_match = {**rule.match, "le": le}
    else:
        total_name, good_name, bad_name = rule.total, None, rule.errors
        good_match = {}
    groups: dict[Labels, tuple[list[Series], list[Series]]] = {}
    for key in store.select(total_name, rule.match):
        series = store.get(key)
        if series is not None:
            groups.setdefault(_group(key.labels, rule.by), ([], []))[0].append(series)
    side_name = good_name if good_name is not None else bad_name
    assert side_name is not None
    for key in store.select(side_name, good_match or rule.match):
        series = store.get(key)
        group = groups.get(_group(tuple((k, v) for k, v in key.labels if k != "le"), rule.by))
        if series is not None and group is not None:
            group[1].append(series)
    out = []
    for labels, (totals, sides) in groups.items():
        pairs = []
        for window in rule.windows:
            figures: list[float | None] = []
            for span in (window.long, window.short):
                total = _sum_increase(totals, now - span, now)
                side = _sum_increase(sides, now - span, now)
                if total is not None and side is None:
                    side = total if good_name is not None else 0.0
                if good_name is not None and total is not None and side is not None:
                    side = max(0.0, total - side)  # bad = all − good (fast enough)
                figures += [side, total]
            pairs.append(
                BurnPair(
                    window.long,
                    window.short,
                    window.factor,
                    Severity.parse(window.severity),
                    *figures,
                )
            )
        judgement = judge_burn(pairs, rule.objective, rule.min_events)
        fired = judgement.fired
        if fired is None or judgement.long_rate is None or judgement.short_rate is None:
            continue
        kind = "latency" if rule.latency_below is not None else "availability"
        summary = rule.summary or (
            f"{kind} SLO {rule.objective:.4g} burning its error budget at "
            f"{_fmt(judgement.long_rate)}× over {format_eta(fired.long_s)[1:]} and "
            f"{_fmt(judgement.short_rate)}× over {format_eta(fired.short_s)[1:]} "
            f"(> {_fmt(fired.factor)}×)"
        )
        evidence = {
            "objective": rule.objective,
            "slo": kind,
            "pairs": list(judgement.pairs),
            "spent_share_of_budget": judgement.long_rate * fired.long_s / rule.period,
        }
        out.append(
            Finding(
                labels,
                _service(labels),
                judgement.severity,
                judgement.long_rate,
                fired.factor,
                summary,
                evidence,
            )
        )
    return out


# -- anomaly -----------------------------------------------------------------------------------
def _rates(points: Sequence[tuple[float, float]]) -> list[float]:
    out = []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t1 > t0 and v1 >= v0:
            out.append((v1 - v0) / (t1 - t0))
    return out


def _anomaly(rule: AnomalyRule, store: SeriesStore, now: float) -> list[Finding]:
    out = []
    season = _SEASON_S[rule.seasonal]
    for key in store.select(rule.metric, rule.match):
        series = store.get(key)
        if series is None or _fresh(series, now, store.interval_s) is None:
            continue
        if rule.rate is not None:
            grown = series.increase(now - rule.rate, now)
            if grown is None:
                continue
            value = grown / rule.rate
            end = now - rule.rate if not season else now - season + rule.window / 2
            start = end - rule.window
            history = _rates(series.window(start, end))
        else:
            latest = series.latest()
            assert latest is not None
            value = latest[1]
            if season:
                start, end = now - season - rule.window / 2, now - season + rule.window / 2
            else:
                # one millisecond before the latest sample (the raw tier's resolution: a
                # smaller step rounds back onto it), so the value is not its own history
                start, end = now - rule.window, latest[0] - 1e-3
            history = [v for _, v in series.window(start, end, mean=True)]
        # a history read from 1- or 5-minute buckets holds fewer points than raw samples: ask
        # for at most 80 % of what its resolution can hold
        step = series.tier_for(start).step or store.interval_s
        needed = min(rule.min_samples, max(3, int(0.8 * (end - start) / step)))
        scored = zscore(
            history,
            value,
            min_samples=needed,
            min_deviation=rule.min_deviation,
            relative_deviation=rule.relative_deviation,
        )
        if scored is None:
            continue
        z, mean, deviation = scored
        if (rule.direction == "up" and z < 0) or (rule.direction == "down" and z > 0):
            continue
        if abs(z) < rule.z:
            continue
        severity = Severity.parse(rule.severity)
        if abs(z) >= rule.critical_z:
            severity = step_worse(severity)
        what = f"rate of {rule.metric}" if rule.rate is not None else rule.metric
        summary = rule.summary or (
            f"{what} is {_fmt(value)}, {_fmt(abs(z))} deviations "
            f"{'above' if z > 0 else 'below'} its usual {_fmt(mean)} (± {_fmt(deviation)})"
        )
        evidence = {
            "value": value,
            "z": z,
            "mean": mean,
            "deviation": deviation,
            "samples": len(history),
            "seasonal": rule.seasonal,
        }
        out.append(
            Finding(key.labels, _service(key.labels), severity, value, rule.z, summary, evidence)
        )
    return out


# -- leak --------------------------------------------------------------------------------------
def _leak(rule: LeakRule, store: SeriesStore, now: float) -> list[Finding]:
    out = []
    for key in store.select(rule.metric, rule.match):
        series = store.get(key)
        if series is None or _fresh(series, now, store.interval_s) is None:
            continue
        first_seen = now - series.covered_s(now)
        start = max(now - rule.window, first_seen + rule.warmup)
        points = series.window(start, now, mean=True)
        trend = recent_trend(points, min_samples=rule.min_samples, min_r2=rule.min_r2)
        if trend is None:
            continue
        slope, r2 = trend.slope, trend.r2
        current = points[-1][1]
        eta = time_to_limit(current, slope, rule.limit)
        if eta is None or eta > rule.horizon:
            continue
        severity = Severity.parse(rule.severity)
        if eta < rule.urgent:
            severity = step_worse(severity)
        summary = rule.summary or (
            f"{rule.metric} grows {_fmt(slope * 3600)}/h (r² {r2:.2f}): "
            f"limit {_fmt(rule.limit)} in {format_eta(eta)}"
        )
        evidence = {
            "slope_per_s": slope,
            "r2": r2,
            "current": current,
            "limit": rule.limit,
            "eta_s": eta,
            "eta": format_eta(eta),
            "samples": trend.samples,
            "trend_since": trend.since,
            "noise": trend.noise,
        }
        out.append(
            Finding(
                key.labels, _service(key.labels), severity, current, rule.limit, summary, evidence
            )
        )
    return out


# -- target down -------------------------------------------------------------------------------
def _target_down(rule: TargetDownRule, store: SeriesStore, now: float) -> list[Finding]:
    out = []
    for key in store.select(UP, rule.match):
        series = store.get(key)
        latest = series.latest() if series is not None else None
        if latest is None or latest[1] > 0 or now - latest[0] > STALE_INTERVALS * store.interval_s:
            continue
        target = key.label("target", "target")
        instance = key.label("instance")
        summary = rule.summary or f"{target} {instance} does not answer"
        out.append(
            Finding(
                key.labels,
                _service(key.labels),
                Severity.parse(rule.severity),
                0.0,
                None,
                summary,
                {"target": target, "instance": instance},
            )
        )
    return out


def evaluate_rule(rule: RuleSpec, store: SeriesStore, now: float) -> list[Finding]:
    """The label sets for which `rule` holds at `now` (epoch seconds)."""
    if isinstance(rule, ThresholdRule):
        return _threshold(rule, store, now)
    if isinstance(rule, BurnRateRule):
        return _burn(rule, store, now)
    if isinstance(rule, AnomalyRule):
        return _anomaly(rule, store, now)
    if isinstance(rule, LeakRule):
        return _leak(rule, store, now)
    return _target_down(rule, store, now)


def rule_reads(rule: RuleSpec) -> dict[str, float]:
    """The series names `rule` reads and how far back (seconds)."""
    if isinstance(rule, ThresholdRule):
        span = max(rule.window, rule.rate or 0.0)
        names = {rule.metric: span}
        if rule.ratio_to:
            names[rule.ratio_to] = span
        return names
    if isinstance(rule, BurnRateRule):
        longest = max(w.long for w in rule.windows)
        if rule.latency_below is not None:
            return {rule.total_latency: longest}  # and one bucket: see retention_for
        return {rule.total: longest, rule.errors: longest}
    if isinstance(rule, AnomalyRule):
        span = rule.window + (rule.rate or 0.0)
        return {rule.metric: span + _SEASON_S[rule.seasonal] + rule.window / 2}
    if isinstance(rule, LeakRule):
        return {rule.metric: rule.window + rule.warmup}
    return {UP: 0.0}


def retention_for(rules: Iterable[RuleSpec]) -> Retention:
    """How long each series name must be kept for these rules (plus a 10 % margin)."""
    spans: dict[str, float] = {}
    buckets: dict[tuple[str, str], float] = {}
    for rule in rules:
        for name, span in rule_reads(rule).items():
            spans[name] = max(spans.get(name, 0.0), span * 1.1)
        if isinstance(rule, BurnRateRule) and rule.latency_below is not None:
            key = (rule.buckets, go_float(rule.latency_below))
            longest = max(w.long for w in rule.windows) * 1.1
            buckets[key] = max(buckets.get(key, 0.0), longest)
    return Retention(spans, by_le=buckets)
