"""Prometheus recording and alerting rules from a watch file: the same rules, run by Prometheus.

`generate(config)` turns every rule of a watch file (``WatchConfig.effective_rules``) into one
rule group evaluated every ``interval``, its records labelled ``crisisctl_rule`` and its
alerts labelled ``severity``, ``crisisctl_rule`` and ``crisisctl_kind`` (so Alertmanager routes
them and crisisctl's intake knows the rule). The sources are the guard's own families
(``promql.source_of``). Per kind (``watch/rules_eval.py`` is the in-process twin):

* **threshold** — ``crisisctl:threshold_value`` is the latest value (a latency percentile
  over ``window``: 1 m by default, the guard's own window), ``rate(m[rate])``, or
  ``(increase(m[window]) or 0·increase(ratio_to[window])) / (increase(ratio_to[window]) > 0)``.
  A fixed severity is one alert; a graded one is four (P3 over the bound, P2 over 2×, P1 over
  3×, P0 over 5×: ``severity.BREACH_RATIO_THRESHOLDS``; under bound/2… for ``below``), all
  named after the rule, so Alertmanager's severity inhibition keeps the worst.
* **burn_rate** — per window span: ``crisisctl:slo_error_ratio{window}`` (bad ÷ all events,
  grouped ``by``), ``crisisctl:slo_events{window}`` and ``crisisctl:slo_burn_rate{window}``
  (ratio ÷ (1 − objective)); ``crisisctl:slo_error_budget_remaining`` over the period. One
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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from crisisctl.severity import BREACH_RATIO_THRESHOLDS, Severity
from crisisctl.watch.config import WatchConfig
from crisisctl.watch.promql import (
    duration,
    label_name,
    metric_name,
    number,
    selector,
    source_of,
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
    "rule_group",
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


class UnsupportedRule(ValueError):
    """A watch rule Prometheus cannot evaluate (it reads a series only watch collects)."""


@dataclass(frozen=True)
class GeneratedAlert:
    """One alerting rule: its name, the watch rule it comes from and its fixed labels."""

    alert: str
    rule: str
    kind: str
    severity: str
    expr: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alert": self.alert, "expr": self.expr}
        if self.for_s:
            out["for"] = duration(self.for_s)
        if self.keep_firing_for_s:
            out["keep_firing_for"] = duration(self.keep_firing_for_s)
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class GeneratedRules:
    """A Prometheus rule file (`document`, `to_yaml`) and what it holds."""

    interval_s: float
    groups: list[dict[str, Any]]
    alerts: list[GeneratedAlert]
    #: one sentence per watch rule left out (why)
    skipped: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"groups": self.groups}

    def to_yaml(self) -> str:
        header = "# generated by `crisisctl rules generate` from a watch file: do not edit\n"
        return header + dump_yaml(self.document())


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL split at ``and``) as ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any) -> str:
    """`document` as YAML (keys in order, PromQL with line breaks as blocks)."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def _record(name: str, expr: str, rule: RuleSpec, **labels: str) -> dict[str, Any]:
    return {"record": name, "expr": expr, "labels": {"crisisctl_rule": rule.name, **labels}}


def _rec(name: str, rule: RuleSpec, **labels: str) -> str:
    return selector(name, {"crisisctl_rule": rule.name, **labels})


def _alert(rule: RuleSpec, severity: str, expr: str, summary: str, **labels: str) -> GeneratedAlert:
    description = (
        f"crisisctl watch rule {rule.name!r} ({rule.kind}), generated by crisisctl rules generate"
    )
    return GeneratedAlert(
        alert=metric_name(rule.name),
        rule=rule.name,
        kind=rule.kind,
        severity=severity,
        expr=expr,
        labels={
            "severity": severity,
            "crisisctl_rule": rule.name,
            "crisisctl_kind": rule.kind,
            **labels,
        },
        annotations={"summary": rule.summary or summary, "description": description},
        for_s=rule.for_,
        keep_firing_for_s=rule.keep_firing_for,
    )


def _source(name: str, rule: RuleSpec) -> Any:
    source = source_of(name)
    if source is None:
        raise UnsupportedRule(
            f"rule {rule.name!r} reads {name}, which only crisisctl watch collects: "
            "it stays with watch."
        )
    return source


# -- threshold ---------------------------------------------------------------------------------
def _threshold(rule: ThresholdRule) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    source = _source(rule.metric, rule)
    if rule.ratio_to is not None:
        whole = _source(rule.ratio_to, rule).over("increase", rule.window, rule.match)
        part = source.over("increase", rule.window, rule.match)
        value = f"({part} or 0 * {whole}) / ({whole} > 0)"
        what = f"{rule.metric} / {rule.ratio_to} over {duration(rule.window)}"
    elif rule.rate is not None:
        value = source.over("rate", rule.rate, rule.match)
        what = f"rate of {rule.metric} over {duration(rule.rate)}"
    else:  # a percentile is read over `window` (default 1 m: the guard's own window)
        value = source.value(rule.match, rule.window)
        what = rule.metric
    records = [_record("crisisctl:threshold_value", value, rule)]
    below = rule.below is not None
    bound = rule.below if below else rule.above
    assert bound is not None
    recorded = _rec("crisisctl:threshold_value", rule)
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
        alerts.append(_alert(rule, severity, expr, summary))
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
            good = _source(rule.buckets, rule).grouped("increase", span, fast, by)
            return f"clamp_min({total} - {on} ({good} or {on} {total}), 0)"
        bad = _source(rule.errors, rule).grouped("increase", span, rule.match, by)
        return f"({bad} or {on} 0 * {total})"

    def events(span: float) -> str:
        name = rule.total_latency if rule.latency_below is not None else rule.total
        return str(_source(name, rule).grouped("increase", span, rule.match, by))

    for span in spans:
        window = duration(span)
        records.append(_record("crisisctl:slo_events", events(span), rule, window=window))
        total = _rec("crisisctl:slo_events", rule, window=window)
        ratio = f"{bad_and_total(span, total)}\n/ {on} ({total} > 0)"
        records.append(_record("crisisctl:slo_error_ratio", ratio, rule, window=window))
        burn = f"{_rec('crisisctl:slo_error_ratio', rule, window=window)} / {number(budget)}"
        records.append(_record("crisisctl:slo_burn_rate", burn, rule, window=window))
    total = events(rule.period)
    remaining = f"1 - {bad_and_total(rule.period, total)}\n/ {on} ({total} > 0) / {number(budget)}"
    records.append(_record("crisisctl:slo_error_budget_remaining", remaining, rule))
    kind = "latency" if rule.latency_below is not None else "availability"
    alerts = []
    for tier, pair in enumerate(rule.windows, start=1):
        limit = number(pair.factor * budget)
        long_w, short_w = duration(pair.long), duration(pair.short)
        expr = (
            f"{_rec('crisisctl:slo_error_ratio', rule, window=long_w)} > {limit}\n"
            f"and ignoring (window) {_rec('crisisctl:slo_error_ratio', rule, window=short_w)}"
            f" > {limit}\n"
            f"and ignoring (window) {_rec('crisisctl:slo_events', rule, window=long_w)}"
            f" >= {rule.min_events}"
        )
        summary = (
            f"{kind} SLO {number(rule.objective)} burning its error budget faster than "
            f"{number(pair.factor)}× over {long_w} and {short_w}"
        )
        alerts.append(
            _alert(rule, pair.severity, expr, summary, tier=str(tier), short_window=short_w)
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
    source = _source(rule.metric, rule)
    season = _SEASON_S[rule.seasonal]
    records = []
    if rule.rate is not None:
        value = source.over("rate", rule.rate, rule.match)
        point = source.over("irate", 3 * interval, rule.match)
        records.append(_record("crisisctl:anomaly_value", value, rule))
        records.append(_record("crisisctl:anomaly_point", point, rule))
        history = _rec("crisisctl:anomaly_point", rule)
        lag = rule.rate
    else:
        records.append(_record("crisisctl:anomaly_value", source.value(rule.match), rule))
        history = _rec("crisisctl:anomaly_value", rule)
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
        _record("crisisctl:anomaly_mean", f"avg_over_time({ranged})", rule),
        _record("crisisctl:anomaly_samples", f"count_over_time({ranged})", rule),
    ]
    n = _rec("crisisctl:anomaly_samples", rule)
    records.append(
        _record(
            "crisisctl:anomaly_stddev",
            f"stddev_over_time({ranged}) * sqrt({n} / ({n} - 1 > 0))",
            rule,
        )
    )
    mean, deviation = _rec("crisisctl:anomaly_mean", rule), _rec("crisisctl:anomaly_stddev", rule)
    floor = number(max(rule.min_deviation, 1e-12))
    z = (
        f"({_rec('crisisctl:anomaly_value', rule)} - {mean})\n"
        f"/ ({deviation} >= {floor} and {deviation} >= {number(rule.relative_deviation)}"
        f" * abs({mean}))\n"
        f"and {n} >= {needed_samples(rule, 300.0 if season else interval, watch_span)}"
    )
    records.append(_record("crisisctl:anomaly_z", z, rule))
    zr = _rec("crisisctl:anomaly_z", rule)
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
        alerts.append(_alert(rule, severity.name, expr, summary))
    return records, alerts


# -- leak --------------------------------------------------------------------------------------
def _leak(rule: LeakRule, interval: float) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    source = _source(rule.metric, rule)
    value = _rec("crisisctl:leak_value", rule)
    window = duration(rule.window)
    slope = _rec("crisisctl:leak_slope", rule)
    var_t = number(interval * interval / 12.0)
    r2 = (
        f"{slope} ^ 2 * (count_over_time({value}[{window}]) ^ 2 - 1) * {var_t}\n"
        f"/ (stddev_over_time({value}[{window}]) ^ 2 > 0)"
    )
    records = [
        _record("crisisctl:leak_value", source.value(rule.match), rule),
        _record("crisisctl:leak_slope", f"deriv({value}[{window}])", rule),
        _record("crisisctl:leak_r2", r2, rule),
        _record(
            "crisisctl:leak_samples",
            f"count_over_time({value}[{duration(rule.window + rule.warmup)}])",
            rule,
        ),
        _record(
            "crisisctl:leak_eta_seconds",
            f"clamp_min(({number(rule.limit)} - {value}) / ({slope} > 0), 0)",
            rule,
        ),
    ]
    warm = number(rule.warmup / interval + rule.min_samples)
    eta = _rec("crisisctl:leak_eta_seconds", rule)
    held = (
        f"and {_rec('crisisctl:leak_r2', rule)} >= {number(rule.min_r2)}\n"
        f"and {_rec('crisisctl:leak_samples', rule)} >= {warm}"
    )
    base = Severity.parse(rule.severity)
    alerts = [
        _alert(
            rule,
            base.name,
            f"{eta} <= {number(rule.horizon)}\n{held}",
            f"{rule.metric} grows steadily: {number(rule.limit)} within {duration(rule.horizon)}",
        )
    ]
    if rule.urgent > 0:
        alerts.append(
            _alert(
                rule,
                step_worse(base).name,
                f"{eta} < {number(rule.urgent)}\n{held}",
                f"{rule.metric} grows steadily: {number(rule.limit)} within "
                f"{duration(rule.urgent)}",
            )
        )
    return records, alerts


# -- target down -------------------------------------------------------------------------------
def _target_down(rule: TargetDownRule) -> tuple[list[dict[str, Any]], list[GeneratedAlert]]:
    expr = f"{selector('up', rule.match)} == 0"
    return [], [_alert(rule, rule.severity, expr, "a scraped target does not answer")]


def rule_group(rule: RuleSpec, interval_s: float) -> tuple[dict[str, Any], list[GeneratedAlert]]:
    """One watch rule as a Prometheus rule group (UnsupportedRule when it cannot be)."""
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
    group = {
        "name": f"crisisctl.{rule.name}",
        "interval": duration(interval_s),
        "rules": records + [a.document() for a in alerts],
    }
    return group, alerts


def generate(config: WatchConfig) -> GeneratedRules:
    """Every rule of `config` (its built-in target_down included) as Prometheus rules."""
    groups, alerts, skipped = [], [], []
    for rule in config.effective_rules():
        try:
            group, made = rule_group(rule, config.interval)
        except UnsupportedRule as exc:
            skipped.append(str(exc))
            continue
        groups.append(group)
        alerts += made
    return GeneratedRules(config.interval, groups, alerts, skipped)
