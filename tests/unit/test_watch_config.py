"""The watch file (crisisctl.watch.config): defaults, rules, and errors with their lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisisctl.watch.config import (
    Directory,
    WatchFileError,
    load_watch_file,
    parse_watch_text,
)
from crisisctl.watch.rules_spec import BurnRateRule, TargetDownRule, ThresholdRule

GOOD = """\
interval: 5s
state_dir: /tmp/watch-state
services:
  api:
    guards: ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    token: env:WATCH_TEST_TOKEN
    probes:
      - {url: "http://127.0.0.1:8000/health", expect_status: 200, timeout: 2s}
    host: true
rules:
  - {name: slow, kind: threshold, metric: guard_latency_p95_ms, above: 250, for: 30s}
  - name: errors
    kind: threshold
    metric: guard_errors_total
    ratio_to: guard_requests_total
    above: 0.05
    severity: P1
  - {name: availability, kind: burn_rate, objective: 0.999}
incidents: {open_at: P2}
notify: {urls: ["json://127.0.0.1:9/hook"], cooldown: 5m}
runbooks:
  P1:
    - level: 1
      actions: [{guard_mode: emergency}]
      escalate_after: 10m
"""


def test_a_good_file(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_watch_text(GOOD, "w.yaml")
    assert config.interval == 5.0
    assert config.services["api"].probes[0].expect_status == [200]
    slow, errors, burn = config.rules
    assert isinstance(slow, ThresholdRule) and slow.for_ == 30.0
    assert isinstance(errors, ThresholdRule) and errors.ratio_to == "guard_requests_total"
    assert isinstance(burn, BurnRateRule) and [w.factor for w in burn.windows] == [14.4, 6, 3, 1]
    response = config.response
    assert response.incidents.open_at == "P2" and response.notify.cooldown == 300.0
    assert response.runbooks["P1"][0].escalate_after == 600.0
    rules = config.effective_rules()
    assert isinstance(rules[-1], TargetDownRule) and rules[-1].for_ == 5.0
    monkeypatch.setenv("WATCH_TEST_TOKEN", "s3cret")
    guards = Directory(config).guards("api")
    assert [g.url for g in guards] == ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
    assert guards[0].token == "s3cret" and "s3cret" not in repr(guards[0])
    assert Directory(config).probe_url("api") == "http://127.0.0.1:8000/health"
    assert Directory(config).guards("nope") == ()


def test_the_directory_gives_guards_their_tls_options_pins_and_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = (
        'services:\n  api:\n    guards: ["https://api.internal:8443"]\n'
        '    transport: {cacert: /etc/ca.pem, resolve: ["api.internal:8443:127.0.0.1"]}\n'
        '    headers: {X-Watch: "1", X-Key: "env:WATCH_TEST_KEY"}\n'
    )
    monkeypatch.setenv("WATCH_TEST_KEY", "k3y")
    (guard,) = Directory(parse_watch_text(text, "w.yaml")).guards("api")
    assert guard.transport is not None and guard.transport.cacert == "/etc/ca.pem"
    assert guard.transport.resolve == ["api.internal:8443:127.0.0.1"]
    assert dict(guard.headers) == {"X-Watch": "1", "X-Key": "k3y"}
    assert "k3y" not in repr(guard)


def test_defaults() -> None:
    config = parse_watch_text("services: {}\n", "w.yaml")
    assert config.interval == 10.0 and config.rules == []
    assert [r.name for r in config.effective_rules()] == ["target_down"]


def _problems(text: str) -> list[str]:
    with pytest.raises(WatchFileError) as caught:
        parse_watch_text(text, "w.yaml")
    return caught.value.problems


def test_unknown_field_is_refused_with_its_line() -> None:
    text = GOOD.replace("    host: true\n", "    host: true\n    hots: true\n")
    assert _problems(text) == ["w.yaml:10: services.api.hots: unknown field (check its spelling)"]


def test_errors_point_at_their_lines() -> None:
    text = GOOD.replace("above: 250", "above: 250, below: 3").replace(
        "objective: 0.999", "objective: 1.5"
    )
    problems = _problems(text)
    assert problems[0].startswith("w.yaml:11: rules[0]: give exactly one of above or below")
    assert problems[1].startswith("w.yaml:18: rules[2].objective: Input should be less than 1")


def test_a_literal_token_is_refused() -> None:
    problems = _problems(GOOD.replace("env:WATCH_TEST_TOKEN", "hunter2"))
    assert problems == [
        "w.yaml:6: services.api.token: write the token as env:NAME "
        "(never the token itself in a file)"
    ]


def test_unknown_rule_kind_and_duplicate_names() -> None:
    text = "rules:\n  - {name: a, kind: magic}\n"
    assert _problems(text)[0].startswith("w.yaml:2: rules[0]: Input tag 'magic'")
    text = "rules:\n  - {name: a, kind: target_down}\n  - {name: a, kind: target_down}\n"
    assert _problems(text) == ["w.yaml:2: rules: two rules are named 'a': names must be unique"]


def test_response_sections_are_checked_too() -> None:
    problems = _problems(GOOD.replace("guard_mode: emergency", "guard_mode: panic"))
    assert problems and all(p.startswith("w.yaml:24: runbooks.P1[0].actions[0]") for p in problems)


def test_yaml_syntax_and_unreadable(tmp_path: Path) -> None:
    assert _problems("rules: [\n")[0].startswith("w.yaml:2: YAML syntax error")
    with pytest.raises(WatchFileError) as caught:
        load_watch_file(tmp_path / "missing.yaml")
    assert "cannot be read" in str(caught.value)
    assert _problems("- a\n") == ["w.yaml:1: watch: must be a YAML mapping of fields"]


def test_a_non_http_url_is_refused() -> None:
    problems = _problems("services:\n  a:\n    guards: [ftp://x]\n")
    assert problems == ["w.yaml:3: services.a.guards: 'ftp://x' is not an http:// or https:// URL"]


def test_burn_rate_windows_and_periods_in_days() -> None:
    text = (
        "rules:\n  - {name: slo, kind: burn_rate, objective: 0.999, period: 30d,\n"
        "     windows: [{long: 3d, short: 6h, factor: 1, severity: P3}]}\n"
    )
    (slo,) = parse_watch_text(text, "w.yaml").rules
    assert isinstance(slo, BurnRateRule)
    assert slo.period == 30 * 86_400.0 and slo.windows[0].long == 3 * 86_400.0
