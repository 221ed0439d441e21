"""The pure logic of distributed load: shares, the merge, lost workers, clocks, redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.load.distributed_proto import decode, encode, redact_url
from crisisctl.load.distributed_shares import (
    ClockSample,
    estimate_offset,
    local_instant,
    lost_worker,
    plan_shares,
    worker_scenario,
)
from crisisctl.load.processes import LiveStats, merge_results
from crisisctl.load.recorder import Tick
from crisisctl.load.recording import LoadResult, SecondStats
from crisisctl.load.scenario import Scenario
from crisisctl.stats import LatencyHistogram


def _scenario(model: dict[str, Any], **extra: Any) -> Scenario:
    data = {"base_url": "http://127.0.0.1:9", "model": model, "operations": [{"path": "/"}]}
    return Scenario.model_validate({**data, **extra})


@given(
    rate=st.integers(1, 400),
    duration=st.integers(1, 5),
    count=st.integers(1, 7),
    arrival=st.sampled_from(["constant", "poisson"]),
)
def test_open_shares_add_up_to_the_schedule_exactly(
    rate: int, duration: int, count: int, arrival: str
) -> None:
    scenario = _scenario(
        {"type": "open", "rate": rate, "duration": duration, "arrival": arrival}, seed=7
    )
    shares = plan_shares(scenario, count)
    total = sum(1 for _ in scenario.model.schedule().arrivals(arrival, 7))  # type: ignore[union-attr]
    assert sum(s.planned for s in shares) == total
    # interleaved: no share is more than one arrival bigger than another
    assert max(s.planned for s in shares) - min(s.planned for s in shares) <= 1
    if arrival == "constant":
        assert total == rate * duration


@given(users=st.integers(1, 50), count=st.integers(1, 8))
def test_closed_shares_split_the_users(users: int, count: int) -> None:
    scenario = _scenario({"type": "closed", "users": users, "duration": 1})
    shares = plan_shares(scenario, count)
    assert sum(s.planned for s in shares) == users
    assert all(s.model == "closed" for s in shares)


def test_a_lost_worker_reports_its_unsent_share() -> None:
    scenario = _scenario({"type": "open", "rate": 100, "duration": 4})
    share = plan_shares(scenario, 2)[1]
    entry = lost_worker(share, "w-b", sent=120, reason="its heartbeat expired", last_seen_s=2.4)
    assert entry["planned_arrivals"] == 200 and entry["unsent_arrivals"] == 80
    assert entry["share"] == "arrivals 1, 3, … of every 2 (200 arrivals)"
    assert entry["last_seen_s"] == 2.4
    closed = plan_shares(_scenario({"type": "closed", "users": 5, "duration": 1}), 2)[0]
    assert lost_worker(closed, "w", 7, "gone", None)["users_lost"] == 3


def test_a_lost_worker_never_counts_negative_unsent() -> None:
    share = plan_shares(_scenario({"type": "open", "rate": 10, "duration": 1}), 2)[0]
    assert lost_worker(share, "w", sent=9, reason="x", last_seen_s=None)["unsent_arrivals"] == 0


def _result(requests: int, latencies: list[int]) -> LoadResult:
    hist = LatencyHistogram()
    for us in latencies:
        hist.record_us(us)
    return LoadResult(
        model="open", url="http://x/", duration_s=2.0, timeout_s=1.0, requests=requests,
        completed=requests, status_counts={200: requests}, latency=hist,
        latency_uncorrected=LatencyHistogram(),
    )  # fmt: skip


def test_merge_is_exact_and_the_series_comes_from_the_ticks() -> None:
    live = LiveStats(2, ["GET /"], 2.0)
    for second, (a, b) in enumerate([(3, 4), (2, 1)]):
        for n in (a, b):
            live.add(Tick(second, second + 1.0, SecondStats(requests=n)))
    a, b = _result(5, [100, 200, 300]), _result(5, [1000, 2000])
    # through the wire form a worker sends
    merged = merge_results([LoadResult.from_dict(r.to_dict(histograms=True)) for r in (a, b)], live)
    assert merged.requests == 10 and merged.status_counts == {200: 10}
    assert merged.latency.count == 5 and merged.latency.max_us >= 2000
    assert [p["requests"] for p in merged.per_second] == [7, 3]


def test_a_lost_reporter_lets_the_others_seconds_close() -> None:
    live = LiveStats(2, ["GET /"], 3.0)
    live.add(Tick(0, 1.0, SecondStats(requests=5)))
    live.add(Tick(0, 1.0, SecondStats(requests=5)))
    live.add(Tick(1, 2.0, SecondStats(requests=5)))  # the other one is gone
    assert live.last_second == 0
    live.lose_reporter()
    assert live.last_second == 1 and live.last_rps == 5


@given(offset=st.floats(-1e6, 1e6), rtts=st.lists(st.floats(0.0, 0.05), min_size=1, max_size=8))
def test_the_clock_offset_comes_from_the_shortest_round_trip(
    offset: float, rtts: list[float]
) -> None:
    samples, t = [], 100.0
    for rtt in rtts:
        # the server reads its clock somewhere inside the round trip
        samples.append(ClockSample(t, t + rtt * 0.3 + offset, t + rtt))
        t += 1.0
    got, uncertainty = estimate_offset(samples)
    assert uncertainty == pytest.approx(min(rtts) / 2, abs=1e-9)
    assert abs(got - offset) <= uncertainty + 1e-6
    assert abs(local_instant(500.0 + offset, got) - 500.0) <= uncertainty + 1e-6


def test_the_redis_password_never_shows() -> None:
    assert redact_url("redis://:pw@10.0.0.1:6379/2") == "redis://***@10.0.0.1:6379/2"
    assert redact_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://127.0.0.1:6379/9") == "redis://127.0.0.1:6379/9"


def test_stream_entries_round_trip() -> None:
    fields = encode("tick", 3, tick={"second": 1})
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert decode(raw) == ("tick", 3, {"tick": {"second": 1}})


def test_a_worker_gets_csv_values_inline_and_no_thresholds(tmp_path: Path) -> None:
    (tmp_path / "ids.csv").write_text("id\n4\n5\n")
    scenario = _scenario(
        {"type": "open", "rate": 1, "duration": 1},
        name="secret-project",
        variables={"id": {"csv": "ids.csv", "column": "id"}},
        thresholds=[{"expr": "p95 < 300ms"}],
        operations=[{"path": "/{id}", "thresholds": [{"expr": "p99 < 1s"}]}],
    )
    sent = worker_scenario(scenario, tmp_path)
    assert sent["variables"] == {"id": {"list": ["4", "5"], "order": "random"}}
    assert sent["thresholds"] == [] and sent["operations"][0]["thresholds"] == []
    assert sent["name"] == "distributed"
    assert Scenario.model_validate(sent).variables["id"].values == ["4", "5"]
