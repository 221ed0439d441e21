"""`crisisctl rules generate`: the rules, configs and dashboard a watch file becomes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crisisctl.cli.main import app
from crisisctl.watch.config import load_watch_file, parse_watch_text
from crisisctl.watch.grafana import concrete_queries, dashboard
from crisisctl.watch.promconfig import IntakeTarget, alertmanager_config, prometheus_config
from crisisctl.watch.promfiles import FILES
from crisisctl.watch.promrules import generate
from crisisctl.watch.promtests import promtool_tests

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "watch-prometheus.yaml"
runner = CliRunner()
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_NOISE = re.compile(r"\d\.?\d*(0{6,}[1-9]|9{6,}\d)")


def _example_rules() -> dict[str, list[dict[str, object]]]:
    rules = generate(load_watch_file(EXAMPLE))
    return {g["name"]: g["rules"] for g in rules.document()["groups"]}


def test_every_rule_of_the_watch_file_becomes_one_group_evaluated_every_interval() -> None:
    config = load_watch_file(EXAMPLE)
    rules = generate(config)
    names = [g["name"] for g in rules.groups]
    assert names == [f"crisisctl.{r.name}" for r in config.effective_rules()]
    assert {g["interval"] for g in rules.groups} == {"15s"}
    assert not rules.skipped
    for alert in rules.alerts:
        assert {"severity", "crisisctl_rule", "crisisctl_kind"} <= set(alert.labels)
        assert alert.annotations["summary"] and alert.annotations["description"]
        assert "$value" not in alert.annotations["summary"]  # promtool can state them exactly


def test_burn_rate_alerts_have_the_workbook_tiers_both_windows_and_a_minimum_of_events() -> None:
    alerts = [a for a in generate(load_watch_file(EXAMPLE)).alerts if a.rule == "availability"]
    assert [(a.labels["tier"], a.labels["short_window"], a.severity) for a in alerts] == [
        ("1", "5m", "P1"),
        ("2", "30m", "P1"),
        ("3", "2h", "P3"),
        ("4", "6h", "P3"),
    ]
    first = alerts[0].expr
    assert 'crisisctl:slo_error_ratio{crisisctl_rule="availability",window="1h"} > 0.0144' in first
    assert 'window="5m"} > 0.0144' in first
    assert 'crisisctl:slo_events{crisisctl_rule="availability",window="1h"} >= 100' in first
    assert "> 0.006\n" in alerts[1].expr  # 6 × (1 − 0.999), without float noise


def test_a_graded_threshold_is_one_alert_per_severity_at_the_breach_ratios() -> None:
    slow = [r for r in _example_rules()["crisisctl.slow"] if "alert" in r]
    assert [(r["labels"]["severity"], r["expr"].rsplit(" ", 1)[1]) for r in slow] == [  # type: ignore[index,union-attr]
        ("P3", "250"),
        ("P2", "500"),
        ("P1", "750"),
        ("P0", "1250"),
    ]
    assert all(r["for"] == "30s" for r in slow)


def test_the_rules_file_has_no_float_noise() -> None:
    text = generate(load_watch_file(EXAMPLE)).to_yaml()
    assert not _NOISE.search(text), _NOISE.search(text)


def test_a_rule_on_a_series_only_watch_collects_is_left_out_with_a_reason() -> None:
    config = parse_watch_text(
        "rules:\n  - {name: probe, kind: threshold, metric: probe_success, below: 1, "
        "severity: P1}\n",
        "w.yaml",
    )
    rules = generate(config)
    assert [g["name"] for g in rules.groups] == ["crisisctl.target_down"]
    assert rules.skipped == [
        "rule 'probe' reads probe_success, which only crisisctl watch collects: "
        "it stays with watch."
    ]


@settings(max_examples=30, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9_.:-]{1,30}", fullmatch=True))
def test_any_rule_name_gives_valid_alert_names_and_keeps_the_name_in_a_label(name: str) -> None:
    text = f"rules:\n  - {{name: {json.dumps(name)}, kind: threshold, metric: m, above: 1}}\n"
    rules = generate(parse_watch_text(text, "w.yaml"))
    mine = [a for a in rules.alerts if a.rule == name]
    assert mine
    for alert in mine:
        assert _METRIC.match(alert.alert)
        assert alert.labels["crisisctl_rule"] == name
        assert json.dumps(name)[1:-1] in alert.expr or name in alert.expr


def test_alertmanager_sends_to_the_intake_with_a_credential_file_and_inhibits_slower_tiers() -> (
    None
):
    rules = generate(load_watch_file(EXAMPLE))
    bearer = yaml.safe_load(alertmanager_config(rules, IntakeTarget("http://10.0.0.9:9464")))
    hook = bearer["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://10.0.0.9:9464/api/v1/alertmanager"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"]
    tiers = [r for r in bearer["inhibit_rules"] if 'tier="1"' in r["source_matchers"]]
    assert tiers and tiers[0]["target_matchers"][0] == 'tier=~"2|3|4"'
    basic = yaml.safe_load(alertmanager_config(rules, IntakeTarget(auth="basic")))
    auth = basic["receivers"][0]["webhook_configs"][0]["http_config"]["basic_auth"]
    assert set(auth) == {"username", "password_file"}


def test_the_scrape_config_reads_the_guard_token_from_a_file_and_never_inlines_it() -> None:
    config = load_watch_file(EXAMPLE)
    text = prometheus_config(config, "crisisctl-rules.yaml", secrets_dir="/run/secrets")
    job = yaml.safe_load(text)["scrape_configs"][0]
    assert job["metrics_path"] == "/_crisis/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"], "labels": {"service": "api"}}]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/API_GUARD_TOKEN",
    }
    assert "# crisisctl-api: the guard token is $API_GUARD_TOKEN" in text


def test_the_dashboard_has_the_required_fields_and_every_figure() -> None:
    model = dashboard()
    assert model["uid"] and model["title"] and model["schemaVersion"] >= 36
    names = [v["name"] for v in model["templating"]["list"]]
    assert names == ["datasource", "job", "service", "instance"]
    ids = [p["id"] for p in model["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in model["panels"]:
        assert panel["type"] and set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${datasource}"
    queries = " ".join(expr for _, expr in concrete_queries(model))
    for family in (
        "crisisctl_http_requests_total",
        "crisisctl_http_request_duration_seconds_bucket",
        "crisisctl_guard_concurrency_limit",
        "crisisctl_guard_in_flight",
        "crisisctl_guard_rejected_total",
        "crisisctl_guard_mode",
        "crisisctl:slo_burn_rate",
        "crisisctl:slo_error_budget_remaining",
    ):
        assert family in queries
    assert "$" not in queries


def test_the_command_writes_every_file_and_reports_in_json(tmp_path: Path) -> None:
    out = tmp_path / "prometheus"
    result = runner.invoke(app, ["rules", "generate", str(EXAMPLE), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(Path(p).name for p in report["files"]) == sorted(FILES)
    assert report["skipped"] == [] and report["unproven"] == []
    assert {a["rule"] for a in report["alerts"]} >= {"slow", "availability", "rss_leak", "down"}
    json.loads((out / "grafana-dashboard.json").read_text(encoding="utf-8"))


def test_bad_input_is_one_sentence_and_exit_code_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["rules", "generate", str(tmp_path / "no.yaml"), "--out", "x"])
    assert missing.exit_code == 2 and "cannot be read" in missing.output
    bad_auth = ["rules", "generate", str(EXAMPLE), "--out", str(tmp_path), "--intake-auth", "x"]
    result = runner.invoke(app, bad_auth)
    assert result.exit_code == 2 and "write bearer or basic" in result.output
    blocked = tmp_path / "file"
    blocked.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["rules", "generate", str(EXAMPLE), "--out", str(blocked)])
    assert result.exit_code == 2 and "writable --out directory" in result.output
    assert "Traceback" not in result.output


def test_alerts_the_synthetic_series_cannot_make_fire_are_named_not_hidden() -> None:
    config = parse_watch_text(
        "rules:\n"
        "  - {name: loose, kind: burn_rate, objective: 0.9}\n"  # tier 1 needs > 144 % bad
        "  - {name: daily, kind: anomaly, metric: guard_requests_total, rate: 1m, "
        "seasonal: day}\n",
        "w.yaml",
    )
    tests = promtool_tests(config, generate(config), "crisisctl-rules.yaml")
    assert tests.unproven == [
        "loose (P1, tier 1) never fires on its synthetic series",
        "rule 'daily' is seasonal (it needs days of history)",
    ]
    assert "# not proven here: loose (P1, tier 1)" in tests.to_yaml()
    loose = next(g for g in tests.document["tests"] if g["name"] == "crisisctl.loose")
    tiers = {e["exp_labels"]["tier"] for c in loose["alert_rule_test"] for e in c["exp_alerts"]}
    assert tiers == {"2", "3", "4"}


def test_https_guards_found_by_dns_are_scraped_through_dns_sd_with_their_tls_files() -> None:
    config = parse_watch_text(
        "services:\n"
        "  shop:\n"
        "    guards: ['https://shop.internal:8443/app']\n"
        "    discover: dns\n"
        "    prefix: /ops\n"
        "    transport: {cacert: /etc/ca.pem}\n"
        "    metrics: ['http://10.0.0.7:9100/metrics']\n",
        "w.yaml",
    )
    jobs = yaml.safe_load(prometheus_config(config, "r.yaml"))["scrape_configs"]
    guard, exporter = jobs
    assert guard["scheme"] == "https" and guard["metrics_path"] == "/app/ops/metrics"
    assert guard["dns_sd_configs"] == [{"names": ["shop.internal"], "type": "A", "port": 8443}]
    assert guard["relabel_configs"] == [{"target_label": "service", "replacement": "shop"}]
    assert guard["tls_config"] == {"ca_file": "/etc/ca.pem"}
    assert "authorization" not in guard
    assert exporter["job_name"] == "crisisctl-shop-2"
    assert exporter["metrics_path"] == "/metrics" and exporter["scheme"] == "http"
