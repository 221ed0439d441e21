"""Prometheus recording and alerting rules from a watch file: the same rules, run by Prometheus.

`generate(config)` turns every rule of a watch file (``WatchConfig.effective_rules``) into a
rule group ``crisisctl.<rule>`` evaluated every ``interval``, its records labelled
``crisisctl_rule`` and its alerts labelled ``severity``, ``crisisctl_rule`` and
``crisisctl_kind`` (so Alertmanager routes them and crisisctl's intake knows the rule). The
sources are the guard's own families (``promql.source_of``). Per kind (``watch/rules_eval.py``
is the in-process twin):

* **threshold** — ``crisisctl:threshold_value`` is the latest value (a latency percentile
  over ``window``: 1 m by default, the guard's own window), ``rate(m[rate])``, or
  ``(increase(m[window]) or 0·increase(ratio_to[window])) / (increase(ratio_to[window]) > 0)``.
  A fixed severity is one alert; a graded one is four (P3 over the bound, P2 over 2×, P1 over
  3×, P0 over 5×: ``severity.BREACH_RATIO_THRESHOLDS``; under bound/2… for ``below``), all
  named after the rule, so Alertmanager's severity inhibition keeps the worst.
* **burn_rate** — per window span: ``crisisctl:slo_error_ratio{window}`` (bad ÷ all events,
  grouped ``by``), ``crisisctl:slo_events{window}`` and ``crisisctl:slo_burn_rate{window}``
  (ratio ÷ (1 − objective)); ``crisisctl:slo_error_budget_remaining`` over the period (in
  a group of its own, ``crisisctl.<rule>.budget``, evaluated every 5 minutes). One
  alert per window pair: both ratios above factor × (1 − objective) and at least
  ``min_events`` events in the long window, labelled ``tier`` (1 = the fastest pair),
  ``short_window`` (and ``window``, the long one) so faster tiers inhibit slower ones.
* **anomaly** — ``crisisctl:anomaly_value`` (the latest value, or ``rate(m[rate])``), its
  history (the recorded value, or per-scrape ``irate`` points) over ``window`` before the
  value (or around the same time a day/week ago) as ``crisisctl:anomaly_mean``,
  ``crisisctl:anomaly_stddev`` (the sample deviation: ``stddev_over_time`` × √(n ÷ (n − 1)))
  and ``crisisctl:anomaly_samples``, and ``crisisctl:anomaly_z`` = (value − mean) ÷ deviation,
  only with enough samples and a deviation over the floor. Alerts at ``|z| ≥ z`` (or one
  direction) and, one severity worse, at ``critical_z``.
* **leak** — on the recorded ``crisisctl:leak_value``: ``crisisctl:leak_slope`` =
  ``deriv(v[window])``; ``crisisctl:leak_r2`` = slope² · var(t) ÷ var(v), with var(t) of n
  evenly spaced samples = interval² · (n² − 1) ÷ 12; ``crisisctl:leak_eta_seconds`` =
  (limit − v) ÷ slope. The alert holds when the ETA is within ``horizon``, r² ≥ ``min_r2`` and
  the warm-up is over: ``count_over_time(v[window + warmup]) ≥ warmup ÷ interval +
  min_samples`` (the series is at least warmup + (min_samples − 1) intervals old, as watch's
  ``first seen + warmup`` asks). One severity worse under ``urgent``.
* **target_down** — ``up == 0``.

``for`` and ``keep_firing_for`` are the rule's. Annotations are fixed text (no ``$value``), so
the generated ``promtool test rules`` file can state them exactly. Rules over series only watch
collects (probes, host figures) are left out and listed in `GeneratedRules.skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crisisctl.severity import BREACH_RATIO_THRESHOLDS, Severity
from crisisctl.watch.config import WatchConfig
from crisisctl.watch.promparts import (
    GeneratedAlert,
    UnsupportedRule,
    alert_of,
    dump_yaml,
    rec,
    record,
    source_for,
)
from crisisctl.watch.promql import (
    duration,
    label_name,
    number,
    selector,
)
from crisisctl.watch.rules import step_worse
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
    "GeneratedAlert",
    "GeneratedRules",
    "UnsupportedRule",
    "dump_yaml",
    "generate",
    "needed_samples",
    "rule_groups",
]

#: a graded threshold's alerts: (severity, breach ratio) as `rules.breach_severity_of` grades
_GRADES = (
    ("P3", 1.0),
    *(
        (name, r)
        for (_, r), name in zip(BREACH_RATIO_THRESHOLDS[::-1], ("P2", "P1", "P0"), strict=True)
    ),
)
_SEASON_S = {"none": 0.0, "day": 86_400.0, "week": 604_800.0}
BUDGET_RECORD = "crisisctl:slo_error_budget_remaining"
#: how often an SLO's remaining budget (a range over the whole period) is evaluated
BUDGET_INTERVAL_S = 300.0


@dataclass(frozen=True)
class GeneratedRules:
    """A Prometheus rule file (`document`, `to_yaml`) and what it holds."""

    interval_s: float
    groups: list[dict[str, Any]]
    alerts: list[GeneratedAlert]
    #: one sentence per watch rule left out (why)
    skipped: list[str] = field(default_factory=list)
    #: one sentence per rule that is written but can never fire as configured
    warnings: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"groups": self.groups}

    def to_yaml(self) -> str:
        header = "# generated by `crisisctl rules generate` from a watch file: do not edit\n"
        return header + dump_yaml(self.document())


# -- threshold ---------------------------------------------------------------------------------
def _threshold(rule: ThresholdRule) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    source = source_for(rule.metric, rule)
    if rule.ratio_to is not None:
        whole = source_for(rule.ratio_to, rule).over("increase", rule.window, rule.match)
        part = source.over("increase", rule.window, rule.match)
        value = f"({part} or 0 * {whole}) / ({whole} > 0)"
        what = f"{rule.metric} / {rule.ratio_to} over {duration(rule.window)}"
    elif rule.rate is not None:
        value = source.over("rate", rule.rate, rule.match)
        what = f"rate of {rule.metric} over {duration(rule.rate)}"
    else:  # a percentile is read over `window` (default 1 m: the guard's own window)
        value = source.value(rule.match, rule.window)
        what = rule.metric
    records = [record("crisisctl:threshold_value", value, rule)]
    below = rule.below is not None
    bound = rule.below if below else rule.above
    assert bound is not None
    recorded = rec("crisisctl:threshold_value", rule)
    word = "under" if below else "over"
    if rule.severity is not None:
        grades: tuple[tuple[str, float], ...] = ((rule.severity, 1.0),)
    else:
        grades = _GRADES
    alerts = []
    for severity, ratio in grades:
        limit = bound / ratio if below else bound * ratio
        expr = f"{recorded} {'<' if below else '>'} {number(limit)}"
        summary = f"{what} is {word} {number(limit)}"
        alerts.append(alert_of(rule, severity, expr, summary, limit))
    return records, alerts


# -- burn rate ---------------------------------------------------------------------------------
def _burn(rule: BurnRateRule) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    by = ", ".join(label_name(label) for label in rule.by)
    budget = 1.0 - rule.objective
    spans = sorted({w.long for w in rule.windows} | {w.short for w in rule.windows})
    records = []

    on = f"on ({by})"

    def bad_and_total(span: float, total: str) -> str:
        """The bad events over `span`, beside `total` (an expression of the events)."""
        if rule.latency_below is not None:
            fast = {**rule.match, "le": go_float(rule.latency_below)}
            good = source_for(rule.buckets, rule).grouped("increase", span, fast, by)
            return f"clamp_min({total} - {on} ({good} or {on} {total}), 0)"
        bad = source_for(rule.errors, rule).grouped("increase", span, rule.match, by)
        return f"({bad} or {on} 0 * {total})"

    def events(span: float) -> str:
        name = rule.total_latency if rule.latency_below is not None else rule.total
        return str(source_for(name, rule).grouped("increase", span, rule.match, by))

    for span in spans:
        window = duration(span)
        records.append(record("crisisctl:slo_events", events(span), rule, window=window))
        total = rec("crisisctl:slo_events", rule, window=window)
        ratio = f"{bad_and_total(span, total)}\n/ {on} ({total} > 0)"
        records.append(record("crisisctl:slo_error_ratio", ratio, rule, window=window))
        burn = f"{rec('crisisctl:slo_error_ratio', rule, window=window)} / {number(budget)}"
        records.append(record("crisisctl:slo_burn_rate", burn, rule, window=window))
    total = events(rule.period)
    remaining = f"1 - {bad_and_total(rule.period, total)}\n/ {on} ({total} > 0) / {number(budget)}"
    records.append(record(BUDGET_RECORD, remaining, rule))
    kind = "latency" if rule.latency_below is not None else "availability"
    alerts = []
    for tier, pair in enumerate(rule.windows, start=1):
        limit = number(pair.factor * budget)
        long_w, short_w = duration(pair.long), duration(pair.short)
        expr = (
            f"{rec('crisisctl:slo_error_ratio', rule, window=long_w)} > {limit}\n"
            f"and ignoring (window) {rec('crisisctl:slo_error_ratio', rule, window=short_w)}"
            f" > {limit}\n"
            f"and ignoring (window) {rec('crisisctl:slo_events', rule, window=long_w)}"
            f" >= {rule.min_events}"
        )
        summary = (
            f"{kind} SLO {number(rule.objective)} burning its error budget faster than "
            f"{number(pair.factor)}× over {long_w} and {short_w}"
        )
        alerts.append(
            alert_of(
                rule,
                pair.severity,
                expr,
                summary,
                pair.factor * budget,
                tier=str(tier),
                short_window=short_w,
            )
        )
    return records, alerts


# -- anomaly -----------------------------------------------------------------------------------
def needed_samples(rule: AnomalyRule, interval: float, span: float) -> int:
    """watch's minimum history for an anomaly rule whose history spans `span` seconds: at
    most 80 % of what the window holds at the resolution its start is kept in (``rules_eval``;
    raw samples up to an hour back)."""
    return min(rule.min_samples, max(3, int(0.8 * span / interval)))


def _anomaly(
    rule: AnomalyRule, interval: float
) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    source = source_for(rule.metric, rule)
    season = _SEASON_S[rule.seasonal]
    records = []
    if rule.rate is not None:
        value = source.over("rate", rule.rate, rule.match)
        point = source.over("irate", 3 * interval, rule.match)
        records.append(record("crisisctl:anomaly_value", value, rule))
        records.append(record("crisisctl:anomaly_point", point, rule))
        history = rec("crisisctl:anomaly_point", rule)
        lag = rule.rate
    else:
        records.append(record("crisisctl:anomaly_value", source.value(rule.match), rule))
        history = rec("crisisctl:anomaly_value", rule)
        lag = interval
    if season:
        span, offset = rule.window, season - rule.window / 2
    else:  # the points after the window's first one, up to the value's own start
        span, offset = rule.window - interval, lag
    # watch reads a gauge's history up to just before its latest sample; a seasonal one from
    # 5-minute buckets
    watch_span = rule.window if rule.rate is not None else rule.window - 1e-3
    ranged = f"{history}[{duration(span)}] offset {duration(offset)}"
    records += [
        record("crisisctl:anomaly_mean", f"avg_over_time({ranged})", rule),
        record("crisisctl:anomaly_samples", f"count_over_time({ranged})", rule),
    ]
    n = rec("crisisctl:anomaly_samples", rule)
    records.append(
        record(
            "crisisctl:anomaly_stddev",
            f"stddev_over_time({ranged}) * sqrt({n} / ({n} - 1 > 0))",
            rule,
        )
    )
    mean, deviation = rec("crisisctl:anomaly_mean", rule), rec("crisisctl:anomaly_stddev", rule)
    floor = number(max(rule.min_deviation, 1e-12))
    z = (
        f"({rec('crisisctl:anomaly_value', rule)} - {mean})\n"
        f"/ ({deviation} >= {floor} and {deviation} >= {number(rule.relative_deviation)}"
        f" * abs({mean}))\n"
        f"and {n} >= {needed_samples(rule, 300.0 if season else interval, watch_span)}"
    )
    records.append(record("crisisctl:anomaly_z", z, rule))
    zr = rec("crisisctl:anomaly_z", rule)
    what = f"rate of {rule.metric}" if rule.rate is not None else rule.metric
    alerts = []
    base = Severity.parse(rule.severity)
    for severity, bound in (
        (base, rule.z),
        (step_worse(base), max(rule.z, rule.critical_z)),
    ):
        if rule.direction == "up":
            expr, side = f"{zr} >= {number(bound)}", "above"
        elif rule.direction == "down":
            expr, side = f"{zr} <= -{number(bound)}", "below"
        else:
            expr, side = f"abs({zr}) >= {number(bound)}", "away from"
        summary = f"{what} is {number(bound)} standard deviations or more {side} its usual"
        alerts.append(alert_of(rule, severity.name, expr, summary, bound))
    return records, alerts


# -- leak --------------------------------------------------------------------------------------
def _leak(rule: LeakRule, interval: float) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    source = source_for(rule.metric, rule)
    value = rec("crisisctl:leak_value", rule)
    window = duration(rule.window)
    slope = rec("crisisctl:leak_slope", rule)
    var_t = number(interval * interval / 12.0)
    r2 = (
        f"{slope} ^ 2 * (count_over_time({value}[{window}]) ^ 2 - 1) * {var_t}\n"
        f"/ (stddev_over_time({value}[{window}]) ^ 2 > 0)"
    )
    records = [
        record("crisisctl:leak_value", source.value(rule.match), rule),
        record("crisisctl:leak_slope", f"deriv({value}[{window}])", rule),
        record("crisisctl:leak_r2", r2, rule),
        record(
            "crisisctl:leak_samples",
            f"count_over_time({value}[{duration(rule.window + rule.warmup)}])",
            rule,
        ),
        record(
            "crisisctl:leak_eta_seconds",
            f"clamp_min(({number(rule.limit)} - {value}) / ({slope} > 0), 0)",
            rule,
        ),
    ]
    warm = number(rule.warmup / interval + rule.min_samples)
    eta = rec("crisisctl:leak_eta_seconds", rule)
    held = (
        f"and {rec('crisisctl:leak_r2', rule)} >= {number(rule.min_r2)}\n"
        f"and {rec('crisisctl:leak_samples', rule)} >= {warm}"
    )
    base = Severity.parse(rule.severity)
    alerts = [
        alert_of(
            rule,
            base.name,
            f"{eta} <= {number(rule.horizon)}\n{held}",
            f"{rule.metric} grows steadily: {number(rule.limit)} within {duration(rule.horizon)}",
            rule.horizon,
        )
    ]
    if rule.urgent > 0:
        alerts.append(
            alert_of(
                rule,
                step_worse(base).name,
                f"{eta} < {number(rule.urgent)}\n{held}",
                f"{rule.metric} grows steadily: {number(rule.limit)} within "
                f"{duration(rule.urgent)}",
                rule.urgent,
            )
        )
    return records, alerts


# -- target down -------------------------------------------------------------------------------
def _target_down(rule: TargetDownRule) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    expr = f"{selector('up', rule.match)} == 0"
    return [], [alert_of(rule, rule.severity, expr, "a scraped target does not answer")]


def rule_groups(
    rule: RuleSpec, interval_s: float
) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    """One watch rule as Prometheus rule groups (UnsupportedRule when it cannot be): one
    evaluated every interval and, for an SLO, its budget over the whole period in a second
    group evaluated every `BUDGET_INTERVAL_S` (a 30-day range is costly to read every few
    seconds, and the budget moves slowly)."""
    if isinstance(rule, ThresholdRule):
        records, alerts = _threshold(rule)
    elif isinstance(rule, BurnRateRule):
        records, alerts = _burn(rule)
    elif isinstance(rule, AnomalyRule):
        records, alerts = _anomaly(rule, interval_s)
    elif isinstance(rule, LeakRule):
        records, alerts = _leak(rule, interval_s)
    else:
        records, alerts = _target_down(rule)
    slow = [r for r in records if r["record"] == BUDGET_RECORD]
    group = {
        "name": f"crisisctl.{rule.name}",
        "interval": duration(interval_s),
        "rules": [r for r in records if r not in slow] + [a.document() for a in alerts],
    }
    groups = [group]
    if slow:
        every = duration(max(interval_s, BUDGET_INTERVAL_S))
        groups.append({"name": f"crisisctl.{rule.name}.budget", "interval": every, "rules": slow})
    return groups, alerts


def _too_short(rule: RuleSpec, interval: float) -> str | None:
    """A sentence when a window of `rule` is shorter than the interval: it never holds two
    samples, so neither Prometheus nor watch can ever compute its rate."""
    spans: list[tuple[str, float]] = []
    if isinstance(rule, ThresholdRule):
        if rule.rate is not None:
            spans.append(("rate", rule.rate))
        if rule.ratio_to is not None:
            spans.append(("window", rule.window))
    elif isinstance(rule, AnomalyRule) and rule.rate is not None:
        spans.append(("rate", rule.rate))
    elif isinstance(rule, BurnRateRule):
        spans += [("short window", w.short) for w in rule.windows]
    for what, span in spans:
        if span < interval:
            return (
                f"rule {rule.name!r}: its {what} {duration(span)} is shorter than the interval "
                f"{duration(interval)}, so it never holds two samples and never fires: make it "
                "at least two intervals long."
            )
    return None


def generate(config: WatchConfig) -> GeneratedRules:
    """Every rule of `config` (its built-in target_down included) as Prometheus rules."""
    groups, alerts, skipped, warnings = [], [], [], []
    for rule in config.effective_rules():
        try:
            made_groups, made = rule_groups(rule, config.interval)
        except UnsupportedRule as exc:
            skipped.append(str(exc))
            continue
        groups += made_groups
        alerts += made
        warning = _too_short(rule, config.interval)
        if warning is not None:
            warnings.append(warning)
    return GeneratedRules(config.interval, groups, alerts, skipped, warnings)
