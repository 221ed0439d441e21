"""The fleet's figures and chart series, read from a watch's store fed by hand."""

from __future__ import annotations

import math

import pytest

from crisisctl.server.fleet import (
    fleet_snapshot,
    fleet_snapshot_async,
    redact_url,
    service_series,
    window_label,
)
from crisisctl.watch.config import parse_watch_text
from crisisctl.watch.loop import Watch
from crisisctl.watch.model import SeriesKey, labels_of

T0 = 1_800_000_000.0
A = {"service": "api", "instance": "10.0.0.5:8000"}
B = {"service": "api", "instance": "10.0.0.6:8000"}
WATCH = """\
interval: 10s
services:
  api:
    guards: ["http://10.0.0.5:8000/?key=secret", "http://user:pw@10.0.0.6:8000"]
rules:
  - {name: avail, kind: burn_rate, objective: 0.99, min_events: 1,
     windows: [{long: 60s, short: 20s, factor: 100, severity: P1}]}
"""


def _watch(tmp_path: object) -> Watch:
    return Watch(parse_watch_text(WATCH, "watch.yaml"), state_dir=None)


def _add(watch: Watch, t: float, name: str, labels: dict[str, str], value: float) -> None:
    watch.store.add(SeriesKey(name, labels_of(labels)), t, value)


def _feed(watch: Watch, steps: int = 7) -> float:
    """Two instances, 10 s apart: A serves 10 req/s (1 % errors), B 30 req/s (none)."""
    now = T0
    for i in range(steps):
        now = T0 + 10 * i
        for labels, rps, errors in ((A, 10, 0.1), (B, 30, 0.0)):
            _add(watch, now, "up", {**labels, "target": "guard"}, 1.0)
            _add(watch, now, "guard_requests_total", labels, rps * 10 * i)
            _add(watch, now, "guard_errors_total", labels, errors * 10 * i)
            _add(watch, now, "guard_rejected_total", labels, 2 * 10 * i)
            _add(watch, now, "guard_shed_total", {**labels, "reason": "queue_full"}, 2 * 10 * i)
            _add(watch, now, "guard_in_flight", labels, 3.0)
            _add(watch, now, "guard_limit", labels, 16.0)
            _add(watch, now, "guard_latency_p95_ms", labels, 40.0 if labels is A else 90.0)
            _add(watch, now, "guard_rss_bytes", labels, 100e6)
        _add(watch, now, "guard_mode_code", A, 1.0)
        _add(watch, now, "guard_emergency", B, 0.0)
    return now


def test_the_fleet_sums_rates_and_takes_the_worst_latency(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch)
    (api,) = fleet_snapshot(watch, now)["services"]
    assert api["name"] == "api" and api["severity"] == "OK"
    assert api["rate_rps"] == pytest.approx(40.0)
    assert api["error_ratio"] == pytest.approx(0.1 * 60 / (40.0 * 60))
    assert api["shed"] == {"queue_full": pytest.approx(4.0)}
    assert api["p95_ms"] == 90.0 and api["p50_ms"] is None
    assert api["rss_bytes"] == 200e6
    a, b = api["instances"]
    assert a == {
        "instance": "10.0.0.5:8000",
        "url_redacted": "http://10.0.0.5:8000/",
        "up": True,
        "mode": "emergency",
        "limit": 16.0,
        "in_flight": 3.0,
    }
    assert b["mode"] == "normal" and b["url_redacted"] == "http://10.0.0.6:8000"
    assert "secret" not in str(api) and "pw" not in str(api)


def test_burn_rate_and_budget_left_follow_the_slo(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch)
    (api,) = fleet_snapshot(watch, now)["services"]
    # bad ÷ total over 60 s = 0.25 %; ÷ (1 − 0.99) = 0.25× the sustainable burn
    assert api["burn_rates"] == {"avail": {"1m": pytest.approx(0.25)}}
    # 0.25× for the 60 s seen out of a 30-day period: almost all the budget is left
    assert api["budget_left"]["avail"] == pytest.approx(1 - 0.25 * 60 / (30 * 86400))


def test_a_stale_instance_has_no_figures_and_is_down(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch) + 300  # nothing scraped for 5 minutes
    (api,) = fleet_snapshot(watch, now)["services"]
    assert all(not i["up"] and i["limit"] is None for i in api["instances"])
    assert api["p95_ms"] is None and api["rss_bytes"] is None


def test_series_are_aligned_and_rates_come_from_the_points_kept(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch)
    series = service_series(watch, "api", now, 3600)
    assert series["t"] == [T0 + 10 * i for i in range(7)]
    assert all(len(v) == 7 for v in series.values())
    assert series["rate_rps"][0] is None
    assert series["rate_rps"][1:] == [pytest.approx(40.0)] * 6
    assert series["shed_rps"][1:] == [pytest.approx(4.0)] * 6
    assert series["limit"] == [32.0] * 7 and series["p95_ms"] == [90.0] * 7


def test_long_series_are_cut_to_360_points_without_losing_the_rate(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch, steps=360 * 2 + 5)
    series = service_series(watch, "api", now, 6 * 3600)
    assert len(series["t"]) <= 360 and series["t"][-1] == now
    rates = [r for r in series["rate_rps"] if r is not None]
    assert rates and all(math.isclose(r, 40.0) for r in rates)


def test_small_helpers() -> None:
    assert [window_label(s) for s in (3600, 300, 86400, 45, 90)] == ["1h", "5m", "1d", "45s", "90s"]
    assert redact_url("https://u:p@[::1]:8443/x?token=1#f") == "https://[::1]:8443/x"
    assert fleet_snapshot(None, T0)["services"] == []


async def test_the_async_snapshot_equals_the_plain_one(tmp_path: object) -> None:
    watch = _watch(tmp_path)
    now = _feed(watch)
    assert await fleet_snapshot_async(watch, now) == fleet_snapshot(watch, now)
