"""Synthetic series for one watch rule, written twice: as watch's folded series (for its store)
and as the guard's own families (for ``promtool test rules`` input_series).

Every rule gets three phases, one sample per ``interval``: **normal** (the rule must not fire),
**breach** (it must) and **recovery** (it must resolve), each long enough for the windows the
rule reads, its ``for`` and its ``keep_firing_for``:

* threshold — a gauge at half (or twice, for ``below``) the bound, then 6× (or ⅙), then back;
  a rate or ratio the same through counters (a ratio's whole grows 100 a sample); a latency
  percentile as the guard's histogram: every request under 1 ms (p95 = 0.95 ms), then every
  request over 60 s (the quantile is then the top finite bound, 60000 ms);
* burn_rate — 100+ events a sample, none bad, then every one bad until every tier that can
  fire does, then a surge of good events that dilutes every window's bad share under every
  tier's threshold within four samples (no waiting hours for the slow windows to slide);
* anomaly — a level (or rate) alternating ±d around ρ (so its history has a deviation over the
  floor), then a jump to ρ(1 ± 1.5·max(z, critical_z)·d), then the alternation again until
  the window no longer holds the jump (seasonal rules are not synthesized: a day of history);
* leak — flat at half the limit through the warm-up, then a straight rise reaching the limit
  at `urgent` ÷ 2 (or `horizon` ÷ 2) past the end of the phase, then flat;
* target_down — ``up`` 1, then 0, then 1.

Counters start high (10⁶ and up) so Prometheus' extrapolation never stops at zero. The guard's
request family carries both ``guard_requests_total`` and ``guard_errors_total`` (status_class
"2xx" and "5xx"), so when a rule reads both, the 2xx series is the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from crisisctl.watch.model import SeriesKey
from crisisctl.watch.promql import Source, escape, number, source_of
from crisisctl.watch.rules_eval import go_float
from crisisctl.watch.rules_spec import (
    AnomalyRule,
    BurnRateRule,
    LeakRule,
    RuleSpec,
    TargetDownRule,
    ThresholdRule,
)

__all__ = [
    "BASE_LABELS",
    "CannotSynthesize",
    "PromSeries",
    "Synthetic",
    "compact_values",
    "synthesize",
]

#: the scrape labels of the one synthetic target (Prometheus adds job and instance)
BASE_LABELS: Final = {"job": "crisisctl", "instance": "127.0.0.1:8000"}
START: Final = 1_000_000.0
#: a placeholder value for each folded label (a route, a method…) the families carry
_PLACEHOLDER: Final = {
    "route": "/",
    "method": "GET",
    "status_class": "2xx",
    "reason": "overloaded",
}
_PER_STEP: Final = 100.0
#: the synthetic histogram's bounds (s): every fast request under the first, every slow one
#: over the last, so its quantile is q × 1 ms, then the last bound (60 s: the guard's top one)
_BOUNDS: Final = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0)


class CannotSynthesize(ValueError):
    """A rule this module has no synthetic series for (one sentence why)."""


@dataclass(frozen=True)
class PromSeries:
    """One promtool input series: a family, its labels, one value per sample."""

    family: str
    labels: Mapping[str, str]
    values: list[float]

    def selector(self) -> str:
        inner = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(self.labels.items()))
        return f"{self.family}{{{inner}}}"


@dataclass
class Synthetic:
    """One rule's synthetic data: watch's series (`watch`), Prometheus' (`prom`), and where
    each phase ends (sample index, exclusive)."""

    rule: RuleSpec
    interval: float
    service: str
    watch: dict[SeriesKey, list[float]] = field(default_factory=dict)
    prom: list[PromSeries] = field(default_factory=list)
    phases: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.phases[-1]

    @property
    def labels(self) -> dict[str, str]:
        """The synthetic target's labels on the Prometheus side (before any folding)."""
        return {**BASE_LABELS, "service": self.service, **self.rule.match}

    def watch_key(self, name: str, **extra: str) -> SeriesKey:
        labels = {"instance": BASE_LABELS["instance"], "service": self.service}
        labels.update(self.rule.match)
        labels.update(extra)
        return SeriesKey(name, tuple(sorted(labels.items())))

    def add(self, name: str, values: list[float], **extra: str) -> None:
        """Watch series `name` and its Prometheus family (see the module docstring)."""
        self.watch[self.watch_key(name, **extra)] = values
        source = source_of(name)
        if source is None:
            raise CannotSynthesize(f"{name} has no Prometheus source")
        if source.quantile is not None:
            self._histogram(values)
            return
        labels = {**self.labels, **source.extra, **extra}
        for label in source.folded:
            labels.setdefault(label, _PLACEHOLDER.get(label, "x"))
        scaled = [v / source.scale for v in values]
        if name == "guard_requests_total":
            errors = self.watch.get(self.watch_key("guard_errors_total"))
            if errors is not None:
                scaled = [r - e + START for r, e in zip(scaled, errors, strict=True)]
        self.prom.append(PromSeries(source.family, labels, scaled))

    def _histogram(self, values: list[float]) -> None:
        """The guard's duration histogram whose quantile is `values` (fast or 60 s slow)."""
        counts = {go_float(b): START for b in _BOUNDS} | {"+Inf": START}
        series: dict[str, list[float]] = {le: [] for le in counts}
        for value in values:
            slow = value >= 1000.0 * _BOUNDS[-1]
            for le in counts:
                if le == "+Inf" or not slow:
                    counts[le] += _PER_STEP
                series[le].append(counts[le])
        for le, column in series.items():
            labels = {**self.labels, "route": "/", "le": le}
            self.prom.append(
                PromSeries("crisisctl_http_request_duration_seconds_bucket", labels, column)
            )


def _steps(seconds: float, interval: float) -> int:
    return math.ceil(seconds / interval - 1e-9)


def _counter(increments: list[float], start: float = START) -> list[float]:
    out, total = [], start
    for step in increments:
        total += step
        out.append(total)
    return out


def _levels(bound: float, below: bool) -> tuple[float, float]:
    """(normal, breach) levels for a bound: ½ and 6× it (2× and ⅙ for `below`)."""
    size = max(abs(bound), 1.0)
    if below:
        return (bound * 2, bound / 6) if bound > 0 else (bound + size, bound - size)
    return (bound * 0.5, bound * 6) if bound > 0 else (bound - size, bound + 5 * size)


def _threshold(syn: Synthetic, rule: ThresholdRule, interval: float) -> None:
    below = rule.below is not None
    bound = rule.below if below else rule.above
    assert bound is not None
    source = source_of(rule.metric)
    quantile = source is not None and source.quantile is not None
    span = rule.window if rule.ratio_to or quantile else (rule.rate or 0.0)
    n = _steps(span + rule.for_ + rule.keep_firing_for, interval) + 6
    syn.phases = [n, 2 * n, 3 * n]
    normal, breach = _levels(bound, below)
    if quantile:
        assert source is not None and source.quantile is not None
        fast, slow = 1000.0 * _BOUNDS[0] * source.quantile, 1000.0 * _BOUNDS[-1]
        normal, breach = (slow, fast) if below else (fast, slow)
    levels = [normal] * n + [breach] * n + [normal] * n
    if rule.ratio_to is not None:
        subset = {rule.metric, rule.ratio_to} == {"guard_errors_total", "guard_requests_total"}
        shares = [min(max(v, 0.0), 1.0) if subset else max(v, 0.0) for v in levels]
        syn.add(rule.metric, _counter([s * _PER_STEP for s in shares]))
        syn.add(rule.ratio_to, _counter([_PER_STEP] * len(levels), 3 * START))
    elif rule.rate is not None:
        syn.add(rule.metric, _counter([max(v, 0.0) * interval for v in levels]))
    else:
        syn.add(rule.metric, levels)


def _burn(syn: Synthetic, rule: BurnRateRule, interval: float, breach_steps: int) -> None:
    normal = max(40, _steps(600.0, interval))
    recovery = _steps(rule.keep_firing_for, interval) + 8
    per_step = max(_PER_STEP, math.ceil(2 * rule.min_events / normal))
    syn.phases = [normal, normal + breach_steps, normal + breach_steps + recovery]
    bad = [0.0] * normal + [per_step] * breach_steps + [0.0] * recovery
    # recovery: a surge of good events dilutes every window's bad share under its tier's
    # threshold within four samples (instead of waiting hours for the slow windows to slide)
    lowest = min(w.factor for w in rule.windows) * (1.0 - rule.objective)
    surge = math.ceil(1.5 * per_step * breach_steps / lowest / 4)
    grow = [per_step] * (normal + breach_steps) + [per_step + surge] * recovery
    total = _counter(grow, 3 * START)
    if rule.latency_below is not None:
        le = go_float(rule.latency_below)
        syn.add(rule.buckets, _counter([g - b for g, b in zip(grow, bad, strict=True)]), le=le)
        syn.add(rule.total_latency, total)
        return
    syn.add(rule.errors, _counter(bad))
    syn.add(rule.total, total)


def _anomaly(syn: Synthetic, rule: AnomalyRule, interval: float) -> None:
    if rule.seasonal != "none":
        raise CannotSynthesize(f"rule {rule.name!r} is seasonal (it needs days of history)")
    d = max(0.1, 5 * rule.relative_deviation)
    rho = max(10.0, 4 * rule.min_deviation / d)
    k = 1.5 * max(rule.z, rule.critical_z)
    jump = max(0.0, 1 - k * d) if rule.direction == "down" else 1 + k * d
    lag = rule.rate or interval
    normal = _steps(rule.window + lag + interval, interval) + 4
    breach = _steps(lag + rule.for_, interval) + 3
    recovery = _steps(rule.window + lag + rule.keep_firing_for, interval) + 4
    syn.phases = [normal, normal + breach, normal + breach + recovery]
    wobble = [rho * (1 + d if i % 2 else 1 - d) for i in range(syn.steps)]
    levels = [rho * jump if normal <= i < syn.phases[1] else w for i, w in enumerate(wobble)]
    if rule.rate is not None:
        syn.add(rule.metric, _counter([v * interval for v in levels]))
    else:
        syn.add(rule.metric, levels)


def _leak(syn: Synthetic, rule: LeakRule, interval: float) -> None:
    eta = (rule.urgent if rule.urgent > 0 else rule.horizon) / 2
    normal = _steps(rule.warmup + rule.window, interval) + rule.min_samples + 4
    rise = _steps(rule.window + rule.for_, interval) + 4
    recovery = _steps(rule.window + rule.keep_firing_for, interval) + 4
    syn.phases = [normal, normal + rise, normal + rise + recovery]
    v0 = rule.limit / 2
    slope = (rule.limit - v0) / ((rise - 1) * interval + eta)
    values = [v0] * normal + [v0 + slope * i * interval for i in range(rise)]
    values += [values[-1]] * recovery
    syn.add(rule.metric, values)


def _target_down(syn: Synthetic, rule: TargetDownRule, interval: float) -> None:
    n = _steps(rule.for_ + rule.keep_firing_for, interval) + 4
    syn.phases = [n, 2 * n, 3 * n]
    values = [1.0] * n + [0.0] * n + [1.0] * n
    syn.watch[syn.watch_key("up")] = values
    syn.prom.append(PromSeries("up", syn.labels, values))


def synthesize(
    rule: RuleSpec, interval: float, service: str, *, breach_steps: int = 0
) -> Synthetic:
    """The synthetic series of `rule` (CannotSynthesize when there are none).
    `breach_steps` sets a burn-rate rule's breach length (``promjudge.burn_breach`` finds
    the shortest that makes every tier fire)."""
    syn = Synthetic(rule, interval, rule.match.get("service", service))
    build: dict[type, Callable[..., None]] = {
        ThresholdRule: _threshold,
        AnomalyRule: _anomaly,
        LeakRule: _leak,
        TargetDownRule: _target_down,
    }
    if isinstance(rule, BurnRateRule):
        _burn(syn, rule, interval, max(breach_steps, 4))
    else:
        build[type(rule)](syn, rule, interval)
    return syn


def primary_source(rule: RuleSpec) -> Source | None:
    """The source whose labels a rule's alerts carry (None for target_down)."""
    if isinstance(rule, ThresholdRule | AnomalyRule | LeakRule):
        return source_of(rule.metric)
    if isinstance(rule, BurnRateRule):
        return source_of(rule.total_latency if rule.latency_below else rule.total)
    return None


def compact_values(values: list[float]) -> str:
    """promtool's input notation with runs of equal steps folded: ``a+bxn`` is the n + 1
    values a, a+b, …, a+n·b."""
    out, i, count = [], 0, len(values)
    while i < count:
        j = i
        if i + 1 < count:
            step = values[i + 1] - values[i]
            j = i + 1
            while j + 1 < count and math.isclose(
                values[j + 1] - values[j], step, rel_tol=1e-9, abs_tol=1e-9
            ):
                j += 1
            if j - i == 1 and j + 1 < count:
                j = i  # a lone pair: write the first value alone
        if j == i:
            out.append(number(values[i]))
            i += 1
            continue
        step = (values[j] - values[i]) / (j - i)
        sign = "-" if step < 0 else "+"
        out.append(f"{number(values[i])}{sign}{number(abs(step))}x{j - i}")
        i = j + 1
    return " ".join(out)
