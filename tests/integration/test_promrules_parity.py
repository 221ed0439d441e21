"""Parity: the in-process watch rules and the generated PromQL give the same verdicts on the
same series, at the same instants.

Each rule's synthetic series (``promsynth``) are fed sample by sample into a watch
`SeriesStore` and its `Engine`; at every sample where Prometheus' answer is clear
(``promtests.alert_states``: no figure within 5 % of a threshold, no window where watch and
Prometheus knowingly differ), the engine's verdict becomes a promtool expectation (which of the
rule's generated alerts fire, with their exact labels). promtool then evaluates the generated
rules on the same series: passing means every verdict agreed. A deliberately wrong threshold
on the watch side must make promtool fail (the comparison can fail).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from promtool_support import run

from crisisctl.severity import Severity
from crisisctl.watch.config import WatchConfig, parse_watch_text
from crisisctl.watch.engine import Engine
from crisisctl.watch.model import Alert
from crisisctl.watch.promql import duration
from crisisctl.watch.promrules import GeneratedAlert, dump_yaml, generate
from crisisctl.watch.promsynth import Synthetic, compact_values
from crisisctl.watch.promtests import alert_states, expected_labels, rule_synthetic
from crisisctl.watch.rules_eval import retention_for
from crisisctl.watch.rules_spec import (
    AnomalyRule,
    BurnRateRule,
    LeakRule,
    RuleSpec,
    TargetDownRule,
    ThresholdRule,
)
from crisisctl.watch.store import SeriesStore

pytestmark = pytest.mark.slow

WINDOWS = (
    "[{long: 10m, short: 2m, factor: 14.4, severity: P1},"
    " {long: 30m, short: 5m, factor: 6, severity: P1},"
    " {long: 1h, short: 10m, factor: 1, severity: P3}]"
)
WATCH = f"""
interval: 15s
services:
  api: {{guards: ["http://127.0.0.1:8000"]}}
rules:
  - {{name: inflight, kind: threshold, metric: guard_in_flight, above: 20}}
  - {{name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 250, for: 30s,
     keep_firing_for: 30s, severity: P2}}
  - {{name: errors, kind: threshold, metric: guard_errors_total, ratio_to: guard_requests_total,
     window: 1m, above: 0.05, severity: P1}}
  - {{name: shedding, kind: threshold, metric: guard_rejected_total, rate: 1m, above: 5}}
  - {{name: quiet, kind: threshold, metric: guard_requests_total, rate: 1m, below: 2,
     severity: P3}}
  - {{name: availability, kind: burn_rate, objective: 0.99, windows: {WINDOWS}}}
  - {{name: latency, kind: burn_rate, objective: 0.99, latency_below: 250ms,
     windows: {WINDOWS}}}
  - {{name: traffic, kind: anomaly, metric: guard_requests_total, rate: 1m, window: 10m, z: 3}}
  - {{name: crowd, kind: anomaly, metric: guard_in_flight, window: 10m, z: 3, direction: up}}
  - {{name: rss, kind: leak, metric: guard_rss_bytes, limit: 1e9, window: 10m, warmup: 2m}}
  - {{name: down, kind: target_down, for: 30s}}
"""
T0 = 1_700_000_000.0


def _expected(rule: RuleSpec, alerts: Sequence[GeneratedAlert], alert: Alert | None) -> list[int]:
    """Which generated alerts (indexes) watch's verdict means should fire."""
    if alert is None:
        return []
    if isinstance(rule, BurnRateRule):
        return [i for i, pair in enumerate(alert.evidence["pairs"]) if pair["fires"]]
    if isinstance(rule, ThresholdRule):  # graded: every grade up to watch's severity
        return [i for i, a in enumerate(alerts) if Severity.parse(a.severity) <= alert.severity]
    if isinstance(rule, AnomalyRule | LeakRule):
        return [0, 1] if alert.severity > Severity.parse(rule.severity) else [0]
    assert isinstance(rule, TargetDownRule)
    return [0]


def _watch_verdicts(
    syn: Synthetic, rule: RuleSpec, alerts: Sequence[GeneratedAlert]
) -> list[list[int]]:
    """The in-process engine on the synthetic series: per sample, the alerts it implies."""
    store = SeriesStore(retention_for([rule]), syn.interval)
    engine = Engine([rule], store)
    out = []
    for k in range(syn.steps):
        now = T0 + k * syn.interval
        for key, values in syn.watch.items():
            store.add(key, now, values[k])
        engine.evaluate(now)
        firing = engine.firing()
        out.append(_expected(rule, alerts, firing[0] if firing else None))
    return out


def _parity_group(
    rule: RuleSpec, watch_rule: RuleSpec, alerts: list[GeneratedAlert], interval: float
) -> tuple[dict[str, Any], dict[str, int]]:
    syn = rule_synthetic(rule, interval, "api", alerts)
    clear = alert_states(syn, alerts)
    watch_syn = Synthetic(watch_rule, syn.interval, syn.service, syn.watch, syn.prom, syn.phases)
    verdicts = _watch_verdicts(watch_syn, watch_rule, alerts)
    checks, counts = [], {"firing": 0, "quiet": 0}
    for k in range(syn.steps):
        if any(state is None for state in clear[k]):
            continue  # near a threshold, or where watch and Prometheus knowingly differ
        counts["firing" if verdicts[k] else "quiet"] += 1
        checks.append(
            {
                "eval_time": duration(k * interval),
                "alertname": alerts[0].alert,
                "exp_alerts": [
                    {
                        "exp_labels": expected_labels(syn, alerts[i]),
                        "exp_annotations": dict(alerts[i].annotations),
                    }
                    for i in verdicts[k]
                ],
            }
        )
    group = {
        "name": rule.name,
        "interval": duration(interval),
        "input_series": [
            {"series": s.selector(), "values": compact_values(s.values)} for s in syn.prom
        ],
        "alert_rule_test": checks,
    }
    return group, counts


def _run_parity(
    tmp: Path, config: WatchConfig, watch_rules: list[RuleSpec]
) -> tuple[Any, dict[str, dict[str, int]]]:
    rules = generate(config)
    (tmp / "rules.yaml").write_text(rules.to_yaml(), encoding="utf-8")
    groups, counts = [], {}
    for rule, watch_rule in zip(config.effective_rules(), watch_rules, strict=True):
        alerts = [a for a in rules.alerts if a.rule == rule.name]
        group, counted = _parity_group(rule, watch_rule, alerts, config.interval)
        groups.append(group)
        counts[rule.name] = counted
    document = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": duration(config.interval),
        "tests": groups,
    }
    (tmp / "parity.test.yaml").write_text(dump_yaml(document), encoding="utf-8")
    return run("promtool", "test", "rules", "parity.test.yaml", cwd=tmp), counts


def test_watch_and_the_generated_promql_agree_at_every_clear_instant(tmp_path: Path) -> None:
    config = parse_watch_text(WATCH, "parity.yaml")
    rules = config.effective_rules()
    done, counts = _run_parity(tmp_path, config, rules)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    kinds = {rule.kind for rule in rules}
    assert kinds == {"threshold", "burn_rate", "anomaly", "leak", "target_down"}
    for name, counted in counts.items():
        # each rule was compared both firing and quiet, at many instants
        assert counted["firing"] >= 3, (name, counted)
        assert counted["quiet"] >= 10, (name, counted)


def test_a_wrong_threshold_on_the_watch_side_breaks_parity(tmp_path: Path) -> None:
    full = parse_watch_text(WATCH, "parity.yaml")
    config = full.model_copy(update={"rules": [r for r in full.rules if r.name == "errors"]})
    wrong = []
    for rule in config.effective_rules():
        if rule.name == "errors":
            assert isinstance(rule, ThresholdRule)
            rule = rule.model_copy(update={"above": 0.5})  # the breach is 0.3: watch is quiet
        wrong.append(rule)
    done, counts = _run_parity(tmp_path, config, wrong)
    assert counts["errors"]["firing"] == 0  # watch, misconfigured, never fires
    assert done.returncode != 0
    assert "alertname: errors" in done.stdout + done.stderr
