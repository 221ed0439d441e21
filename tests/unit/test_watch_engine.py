"""Rules against the store, and alerts over time (crisisctl.watch.rules_eval and engine)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pydantic import TypeAdapter

from crisisctl.severity import Severity
from crisisctl.watch.engine import Engine, alert_from_dict, alert_to_dict
from crisisctl.watch.model import AlertState, SeriesKey, labels_of
from crisisctl.watch.rules_eval import evaluate_rule, retention_for
from crisisctl.watch.rules_spec import RuleSpec
from crisisctl.watch.store import SeriesStore

T0 = 1_800_000_000.0
RULE = TypeAdapter(RuleSpec)
API_A = labels_of({"service": "api", "instance": "a:1"})
API_B = labels_of({"service": "api", "instance": "b:1"})


def rule(**fields: Any) -> RuleSpec:
    return RULE.validate_python(fields)


def store_for(*rules: RuleSpec, interval: float = 10.0) -> SeriesStore:
    return SeriesStore(retention_for(rules), interval)


# -- threshold over time: for, keep_firing_for, severity changes -------------------------------
def test_for_and_keep_firing_for() -> None:
    slow = rule(
        name="slow", kind="threshold", metric="p95", above=100, **{"for": 20}, keep_firing_for=15
    )
    store = store_for(slow)
    engine = Engine([slow], store)
    key = SeriesKey("p95", API_A)
    seen = []
    values = [50, 150, 150, 150, 700, 50, 50, 50]
    for i, value in enumerate(values):
        now = T0 + 10 * i
        store.add(key, now, value)
        changes = engine.evaluate(now)
        seen.append([(c.previous, c.alert.state, c.alert.severity) for c in changes])
    assert seen == [
        [],
        [],  # pending since T0+10
        [],  # held 10 s < 20 s
        [(AlertState.PENDING, AlertState.FIRING, Severity.P3)],  # held 20 s: 1.5× → P3
        [(AlertState.FIRING, AlertState.FIRING, Severity.P0)],  # 7× → P0: a transition too
        [],  # lapsed at T0+50, 10 s after it last held: keeps firing (15 s)
        [(AlertState.FIRING, AlertState.RESOLVED, Severity.P0)],  # 20 s after: resolved
        [],
    ]
    assert engine.alerts() == []


def test_one_alert_per_rule_and_labels() -> None:
    slow = rule(name="slow", kind="threshold", metric="p95", above=100)
    store = store_for(slow)
    engine = Engine([slow], store)
    changes = []
    for i in range(5):
        for labels in (API_A, API_B):
            store.add(SeriesKey("p95", labels), T0 + 10 * i, 500)
        changes += engine.evaluate(T0 + 10 * i)
    assert len(changes) == 2  # one fire per instance, none per scrape after
    assert {a.fingerprint for a in engine.firing()} == {c.alert.fingerprint for c in changes}
    assert all(c.previous is None for c in changes)


def test_stale_series_are_not_judged() -> None:
    slow = rule(name="slow", kind="threshold", metric="p95", above=100)
    store = store_for(slow)
    store.add(SeriesKey("p95", API_A), T0, 500)
    assert evaluate_rule(slow, store, T0 + 25)
    assert not evaluate_rule(slow, store, T0 + 35)  # three intervals old


def test_error_ratio_from_two_counters() -> None:
    errors = rule(
        name="errors", kind="threshold", metric="err", ratio_to="req", above=0.05, window=60
    )
    store = store_for(errors)
    for i in range(7):
        store.add(SeriesKey("req", API_A), T0 + 10 * i, 100.0 * i)
        store.add(SeriesKey("err", API_A), T0 + 10 * i, 20.0 * i)  # 20 %
    (finding,) = evaluate_rule(errors, store, T0 + 60)
    assert finding.value == pytest.approx(0.2)
    assert finding.severity is Severity.P1  # 0.2 / 0.05 = 4× > 3 "high"


def test_below_bound_and_fixed_severity() -> None:
    probe = rule(name="probe", kind="threshold", metric="probe_success", below=1, severity="P0")
    store = store_for(probe)
    store.add(SeriesKey("probe_success", API_A), T0, 0.0)
    store.add(SeriesKey("probe_success", API_B), T0, 1.0)
    (finding,) = evaluate_rule(probe, store, T0)
    assert finding.labels == API_A and finding.severity is Severity.P0


# -- burn rate through the store ---------------------------------------------------------------
def _traffic(
    store: SeriesStore,
    seconds: float,
    per_s: float,
    error_share: float,
    start: float = T0,
    labels: Any = API_A,
) -> float:
    total = bad = 0.0
    t = start
    while t <= start + seconds:
        store.add(SeriesKey("guard_requests_total", labels), t, total)
        store.add(SeriesKey("guard_errors_total", labels), t, bad)
        total += per_s * 10
        bad += per_s * 10 * error_share
        t += 10
    return t - 10


def test_availability_burn_pages_at_the_workbook_rate() -> None:
    slo = rule(name="availability", kind="burn_rate", objective=0.999)
    store = store_for(slo)
    end = _traffic(store, 2 * 3600, 10.0, 0.02)  # 2 % errors: 20× the 0.1 % budget
    (finding,) = evaluate_rule(slo, store, end)
    assert finding.severity is Severity.P1 and finding.labels == (("service", "api"),)
    assert finding.value == pytest.approx(20.0, rel=0.01)
    assert finding.evidence["pairs"][0]["fires"] is True
    assert "20× over 1 h" in finding.summary


def test_burn_below_the_page_factor_makes_a_ticket() -> None:
    slo = rule(name="availability", kind="burn_rate", objective=0.999)
    store = store_for(slo)
    end = _traffic(store, 26 * 3600, 1.0, 0.005)  # 5×: under 14.4× and 6×, over 3×
    (finding,) = evaluate_rule(slo, store, end)
    assert finding.severity is Severity.P3  # 3× over 1 d and 2 h
    assert [p["fires"] for p in finding.evidence["pairs"]] == [False, False, True, True]
    store = store_for(slo)
    end = _traffic(store, 26 * 3600, 1.0, 0.0009)  # 0.9×: within budget
    assert evaluate_rule(slo, store, end) == []


def test_burn_groups_instances_of_a_service_and_needs_events() -> None:
    slo = rule(name="availability", kind="burn_rate", objective=0.999, min_events=1000)
    store = store_for(slo)
    _traffic(store, 3600, 0.1, 1.0)  # all failing, 360 requests in the hour: too few
    end = _traffic(store, 3600, 0.1, 1.0, labels=API_B)
    assert evaluate_rule(slo, store, end) == []
    store.add(SeriesKey("guard_requests_total", API_A), end + 10, 10_000)  # a burst of events
    store.add(SeriesKey("guard_errors_total", API_A), end + 10, 10_000)
    (finding,) = evaluate_rule(slo, store, end + 10)
    assert finding.evidence["pairs"][0]["long_events"] > 1000


def test_latency_slo_from_histogram_buckets() -> None:
    slo = rule(name="fast", kind="burn_rate", objective=0.99, latency_below=0.25)
    store = store_for(slo)
    total = fast = 0.0
    for i in range(400):
        t = T0 + 10 * i
        store.add(SeriesKey("guard_duration_count_total", API_A), t, total)
        store.add(SeriesKey("guard_duration_le_total", (*API_A, ("le", "0.25"))), t, fast)
        store.add(SeriesKey("guard_duration_le_total", (*API_A, ("le", "0.5"))), t, total)
        total += 100
        fast += 70  # 30 % slower than 250 ms: 30× a 1 % budget
    (finding,) = evaluate_rule(slo, store, T0 + 3990)
    assert finding.value == pytest.approx(30.0, rel=0.01)
    assert finding.severity is Severity.P1 and "latency SLO" in finding.summary


# -- anomaly and leak --------------------------------------------------------------------------
def test_anomaly_after_a_steady_hour() -> None:
    spike = rule(name="spike", kind="anomaly", metric="rps", window=3600, z=3, min_samples=30)
    store = store_for(spike)
    key = SeriesKey("rps", API_A)
    for i in range(360):
        store.add(key, T0 + 10 * i, 100.0 + (i % 5))  # 100..104: sd ≈ 1.4
    assert evaluate_rule(spike, store, T0 + 3590) == []
    store.add(key, T0 + 3600, 130.0)
    (finding,) = evaluate_rule(spike, store, T0 + 3600)
    assert finding.evidence["z"] > 4 and finding.severity is Severity.P2  # ≥ critical_z: worse


def test_leak_reports_the_time_to_oom() -> None:
    leak = rule(name="rss", kind="leak", metric="rss", limit=2e9, window=1800, warmup=300)
    store = store_for(leak)
    key = SeriesKey("rss", API_A)
    slope = 1e5  # bytes per second
    for i in range(240):  # 40 minutes, the first 5 of them a warm-up burst
        t = T0 + 10 * i
        value = 5e8 + (3e8 if i < 30 else 0) + slope * (t - T0)
        store.add(key, t, value if i >= 30 else 1e9 - i)
    now = T0 + 2390
    (finding,) = evaluate_rule(leak, store, now)
    current = 5e8 + slope * 2390
    eta = (2e9 - current) / slope
    assert finding.evidence["eta_s"] == pytest.approx(eta, rel=1e-6)
    assert finding.evidence["r2"] == pytest.approx(1.0)
    assert finding.evidence["eta"] == "~3 h 30 m" and "in ~3 h 30 m" in finding.summary
    assert finding.severity is Severity.P2


def test_target_down() -> None:
    down = rule(name="down", kind="target_down")
    store = store_for(down)
    store.add(SeriesKey("up", (*API_A, ("target", "guard"))), T0, 0.0)
    store.add(SeriesKey("up", (*API_B, ("target", "guard"))), T0, 1.0)
    (finding,) = evaluate_rule(down, store, T0)
    assert finding.summary == "guard a:1 does not answer" and finding.severity is Severity.P1


# -- restart -------------------------------------------------------------------------------------
def test_a_restored_engine_does_not_fire_again() -> None:
    slow = rule(name="slow", kind="threshold", metric="p95", above=100)
    store = store_for(slow)
    engine = Engine([slow], store)
    store.add(SeriesKey("p95", API_A), T0, 500)
    assert len(engine.evaluate(T0)) == 1
    saved = json.loads(json.dumps(engine.state()))
    again = Engine([slow], store)
    assert again.restore(saved) == 1
    store.add(SeriesKey("p95", API_A), T0 + 10, 500)
    assert again.evaluate(T0 + 10) == []  # still firing: no new transition, no new incident
    store.add(SeriesKey("p95", API_A), T0 + 20, 50)
    (resolved,) = again.evaluate(T0 + 20)
    assert resolved.alert.state is AlertState.RESOLVED
    assert Engine([], store).restore(saved) == 0  # the rule left the file


def test_a_restart_with_no_samples_does_not_resolve_what_fires() -> None:
    errors = rule(
        name="errors", kind="threshold", metric="err", ratio_to="req", above=0.05, window=30
    )
    store = store_for(errors)
    for i in range(4):
        store.add(SeriesKey("req", API_A), T0 + 10 * i, 100.0 * i)
        store.add(SeriesKey("err", API_A), T0 + 10 * i, 20.0 * i)
    engine = Engine([errors], store)
    assert len(engine.evaluate(T0 + 30)) == 1
    saved = json.loads(json.dumps(engine.state()))
    empty = store_for(errors)  # killed: no series saved
    again = Engine([errors], empty)
    assert again.restore(saved) == 1
    empty.add(SeriesKey("req", API_A), T0 + 100, 0.0)  # one sample: no rate yet
    empty.add(SeriesKey("err", API_A), T0 + 100, 0.0)
    assert again.evaluate(T0 + 100) == []  # no data is not health
    assert [a.state for a in again.alerts()] == [AlertState.FIRING]
    for i in range(1, 3):  # healthy samples, but the 30 s window is not refilled yet
        empty.add(SeriesKey("req", API_A), T0 + 100 + 10 * i, 100.0 * i)
        empty.add(SeriesKey("err", API_A), T0 + 100 + 10 * i, 0.0)
        assert again.evaluate(T0 + 100 + 10 * i) == []
    empty.add(SeriesKey("req", API_A), T0 + 130, 300.0)
    empty.add(SeriesKey("err", API_A), T0 + 130, 0.0)
    (resolved,) = again.evaluate(T0 + 130)
    assert resolved.alert.state is AlertState.RESOLVED


def test_alert_dict_round_trip() -> None:
    slow = rule(name="slow", kind="threshold", metric="p95", above=100)
    store = store_for(slow)
    engine = Engine([slow], store)
    store.add(SeriesKey("p95", API_A), T0, 500)
    (change,) = engine.evaluate(T0)
    assert alert_from_dict(json.loads(json.dumps(alert_to_dict(change.alert)))) == change.alert


def test_for_zero_fires_at_once_whatever_the_microseconds() -> None:
    slow = rule(name="slow", kind="threshold", metric="p95", above=100)
    store = store_for(slow)
    engine = Engine([slow], store)
    now = T0 + 0.0000006  # a datetime rounds it up to the next microsecond
    store.add(SeriesKey("p95", API_A), now, 500)
    assert [c.alert.state for c in engine.evaluate(now)] == [AlertState.FIRING]


def test_seasonal_anomaly_compares_with_the_same_hour_yesterday() -> None:
    daily = rule(
        name="daily", kind="anomaly", metric="rps", window=3600, seasonal="day", min_samples=30
    )
    store = SeriesStore(retention_for([daily]), 60.0)
    key = SeriesKey("rps", API_A)
    day = 86_400.0
    rng = random.Random(7)
    for i in range(int(1.1 * day / 60)):  # a daily cycle: busy around noon, quiet at night
        t = T0 + 60 * i
        hour = (t - T0) % day / 3600
        store.add(key, t, (1000.0 if 11 <= hour < 13 else 100.0) + rng.gauss(0, 40))
    noon_next_day = T0 + day + 12 * 3600 - 60
    store.add(key, noon_next_day, 1001.0)  # busy at noon, as every day: no anomaly
    assert evaluate_rule(daily, store, noon_next_day) == []
    store.add(key, noon_next_day + 60, 100.0)  # quiet at noon: an anomaly (the level at night)
    (finding,) = evaluate_rule(daily, store, noon_next_day + 60)
    assert finding.evidence["z"] < -3 and finding.evidence["seasonal"] == "day"


@pytest.mark.parametrize(
    ("bound", "value", "summary_has_ratio"),
    [({"above": 0}, 3.0, False), ({"above": -1}, 0.5, False), ({"below": 0}, -2.0, False)],
)
def test_a_bound_at_or_below_zero_with_a_fixed_severity_fires_without_a_ratio(
    bound: dict[str, float], value: float, summary_has_ratio: bool
) -> None:
    # (it divided by the bound: the watch loop crashed on `above: 0`)
    fixed = rule(name="any", kind="threshold", metric="errors", severity="P2", **bound)
    store = store_for(fixed)
    store.add(SeriesKey("errors", API_A), T0, value)
    (finding,) = evaluate_rule(fixed, store, T0)
    assert finding.severity is Severity.P2 and finding.evidence["breach_ratio"] is None
    assert ("× the bound" in finding.summary) is summary_has_ratio
