"""The files `crisisctl rules generate` writes pass Prometheus' and Alertmanager's own checks:
``promtool check rules``, ``promtool test rules`` (each alert fires and resolves),
``promtool check config``, ``amtool check-config``, and every dashboard query parses as
PromQL (each one a recording rule for ``promtool check rules``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from promtool_support import run
from typer.testing import CliRunner

from crisisctl.cli.main import app
from crisisctl.watch.grafana import concrete_queries

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "watch-prometheus.yaml"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example watch file's output, generated once (its guard token in a secrets dir)."""
    root = tmp_path_factory.mktemp("rules")
    secrets = root / "secrets"
    secrets.mkdir()
    (secrets / "API_GUARD_TOKEN").write_text("token-for-the-check\n", encoding="utf-8")
    out = root / "out"
    args = ["rules", "generate", str(EXAMPLE), "--out", str(out), "--secrets-dir", str(secrets)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_the_generated_rules_pass_promtool_check_rules(generated: Path) -> None:
    done = run("promtool", "check", "rules", "crisisctl-rules.yaml", cwd=generated)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.slow
def test_the_generated_promtool_tests_prove_each_alert_fires_and_resolves(generated: Path) -> None:
    done = run("promtool", "test", "rules", "crisisctl-rules.test.yaml", cwd=generated)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    tests = yaml.safe_load((generated / "crisisctl-rules.test.yaml").read_text(encoding="utf-8"))
    rules = yaml.safe_load((generated / "crisisctl-rules.yaml").read_text(encoding="utf-8"))
    alerts = {
        (r["alert"], r["labels"]["severity"], r["labels"].get("tier"))
        for g in rules["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    proven = {
        (
            e["exp_labels"]["crisisctl_rule"],
            e["exp_labels"]["severity"],
            e["exp_labels"].get("tier"),
        )
        for group in tests["tests"]
        for check in group["alert_rule_test"]
        for e in check["exp_alerts"]
    }
    assert proven == alerts  # every alerting rule is seen firing…
    for group in tests["tests"]:  # …and every group ends with nothing firing
        assert group["alert_rule_test"][-1]["exp_alerts"] == []
        assert group["alert_rule_test"][0]["exp_alerts"] == []


def test_the_generated_promtool_tests_fail_when_a_rule_is_wrong(
    generated: Path, tmp_path: Path
) -> None:
    rules = (generated / "crisisctl-rules.yaml").read_text(encoding="utf-8")
    broken = rules.replace(
        'crisisctl:threshold_value{crisisctl_rule="errors"} > 0.05',
        'crisisctl:threshold_value{crisisctl_rule="errors"} > 0.5',
    )
    assert broken != rules
    (tmp_path / "crisisctl-rules.yaml").write_text(broken, encoding="utf-8")
    tests = yaml.safe_load((generated / "crisisctl-rules.test.yaml").read_text(encoding="utf-8"))
    tests["tests"] = [g for g in tests["tests"] if g["name"] == "crisisctl.errors"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    done = run("promtool", "test", "rules", "t.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "alertname: errors" in done.stdout + done.stderr


def test_the_alertmanager_config_passes_amtool(generated: Path) -> None:
    done = run("amtool", "check-config", "alertmanager.yml", cwd=generated)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "inhibit rules" in done.stdout


def test_the_scrape_config_passes_promtool_check_config(generated: Path) -> None:
    done = run("promtool", "check", "config", "prometheus-scrape.yml", cwd=generated)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(generated: Path, tmp_path: Path) -> None:
    model = json.loads((generated / "grafana-dashboard.json").read_text(encoding="utf-8"))
    queries = concrete_queries(model)
    assert len(queries) >= 10
    rules = [
        {"record": f"crisisctl:dashboard_panel{panel}_{i}", "expr": expr}
        for i, (panel, expr) in enumerate(queries)
    ]
    (tmp_path / "panels.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}), encoding="utf-8"
    )
    done = run("promtool", "check", "rules", "panels.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = [{"record": "crisisctl:broken", "expr": "sum by (le (rate(x[1m]))"}]
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "b", "rules": broken}]}), encoding="utf-8"
    )
    assert run("promtool", "check", "rules", "broken.yaml", cwd=tmp_path).returncode != 0


EDGES = """
interval: 20s
rules:
  - {name: b0, kind: burn_rate, objective: 0.995, by: [],
     windows: [{long: 10m, short: 1m, factor: 10, severity: P0}]}
  - {name: b2, kind: burn_rate, objective: 0.99, by: [service, instance], match: {service: web},
     windows: [{long: 5m, short: 1m, factor: 5, severity: P2}]}
  - {name: custom-slo, kind: burn_rate, objective: 0.9, errors: app_failures_total,
     total: app_calls_total, windows: [{long: 5m, short: 1m, factor: 2, severity: P1}]}
  - {name: neg, kind: threshold, metric: temp_celsius, above: -5, severity: P2}
  - {name: negbelow, kind: threshold, metric: temp_celsius, below: -10, severity: P1,
     match: {room: "a\\"b"}}
  - {name: zero, kind: threshold, metric: queue, above: 0, severity: P3, for: 40s}
  - {name: 9lives, kind: target_down, match: {service: web}, keep_firing_for: 1m}
"""


def test_edge_cases_still_fire_and_resolve_under_promtool(tmp_path: Path) -> None:
    """No grouping, two labels, custom counters, bounds ≤ 0, a quote in a label value, a
    name starting with a digit: every alert is proven and promtool agrees."""
    (tmp_path / "watch.yaml").write_text(EDGES, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["rules", "generate", str(tmp_path / "watch.yaml"), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unproven"] == []
    done = run("promtool", "test", "rules", "crisisctl-rules.test.yaml", cwd=out)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
