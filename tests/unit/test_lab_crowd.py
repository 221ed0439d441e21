"""The crowd's polling policies and tallies, and the story the demo's incident learns."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crisisctl.lab import story
from crisisctl.lab.crowd import (
    BACKOFF,
    EVERY_2S,
    CrowdConfig,
    PollPolicy,
    Tally,
    loopback_addresses,
    next_interval,
    schedule,
)


def test_the_seeds_backoff_schedule() -> None:
    times = schedule(BACKOFF)
    assert len(times) == BACKOFF.max_polls == 100
    gaps = [b - a for a, b in itertools.pairwise([0.0, *times])]
    assert gaps[:4] == pytest.approx([5.0, 6.0, 7.2, 8.64])
    assert max(gaps) == pytest.approx(30.0) and gaps[-1] == pytest.approx(30.0)
    assert schedule(EVERY_2S, 4) == [2.0, 4.0, 6.0, 8.0]
    # 4 tabs polling a scan every 2 s for its first minute vs one shared backoff schedule
    aggressive = 4 * sum(1 for t in schedule(EVERY_2S) if t <= 60.0)
    shared = sum(1 for t in times if t <= 60.0)
    assert (aggressive, shared) == (120, 6)


@given(
    first=st.floats(0.1, 10.0),
    factor=st.floats(1.0, 3.0),
    cap=st.floats(10.0, 60.0),
    polls=st.integers(1, 60),
)
def test_backoff_never_shrinks_and_never_passes_its_cap(
    first: float, factor: float, cap: float, polls: int
) -> None:
    policy = PollPolicy("p", first, cap, factor, True, polls, True)
    times = schedule(policy)
    gaps = [b - a for a, b in itertools.pairwise([0.0, *times])]
    assert len(times) == polls and gaps[0] == pytest.approx(first)
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(gaps))
    assert all(g <= max(cap, first) + 1e-9 for g in gaps)
    assert next_interval(policy, cap * 2) == cap


def test_tally_counts_slow_polls_and_rates() -> None:
    tally = Tally(started=100.0)
    for ms in (10, 240, 260, 2_000):
        tally.poll_latency.record_us(ms * 1000)
    tally.polls = 5
    tally.errors["timeout"] = 1
    doc = tally.as_dict(now=102.0, slow_ms=250.0)
    assert doc["polls_slower"] == 2 and doc["polls_per_s"] == 2.5
    assert doc["poll_latency_ms"]["count"] == 4 and doc["scan_time_ms"] is None
    assert Tally(started=0.0).as_dict(now=1.0)["polls_slower"] is None


def test_crowd_config_and_addresses() -> None:
    with pytest.raises(ValueError):
        CrowdConfig(users=0)
    with pytest.raises(ValueError):
        CrowdConfig(scan_every_s=0.0)
    addresses = loopback_addresses(3)
    assert len(addresses) == 3
    assert all(a.startswith("127.") for a in addresses)


FACTS: dict[str, Any] = {
    "users": 4,
    "tabs": 4,
    "target_ms": 250.0,
    "ttl_s": 20.0,
    "rss_growth_mb": 12.5,
    "affected_requests": 80,
    "p95_improvement_pct": 99.5,
    "sick_stats": {
        "workers": 6,
        "scans_active": 20,
        "pool_waiting": 31,
        "scans_accepted": 90,
        "scans_rejected": 0,
        "scans_stored": 70,
        "stored_result_mb": 35.0,
        "rss_mb": 80.1,
    },
    "crowd_before": {"polls_per_s": 5.5, "polls_skipped_busy": 900},
    "triage_before": {
        "severity": "P0",
        "degradation_factor": 14.2,
        "duration_s": 7.5,
        "latency_ms": {"p95": 3550.0},
    },
    "load_before": {"latency_ms": {"p95": 3900.0, "p99": 4100.0}, "error_rate": 0.02},
    "load_after": {"latency_ms": {"p95": 12.0, "p99": 14.0}, "error_rate": 0.0},
}


def test_root_causes_carry_the_measured_evidence() -> None:
    causes = story.root_causes(FACTS)
    assert [c["category"] for c in causes] == [
        "Resource Management", "API Protection", "Frontend Optimization", "Memory Management",
    ]  # fmt: skip
    text = " ".join(e for c in causes for e in c["evidence"])
    for figure in ("3,550 ms", "14.2×", "31 pool tasks", "90 scans accepted", "5.5 polls/s",
                   "35.0 MB", "12.5 MB"):  # fmt: skip
        assert figure in text
    assert "6-thread worker pool" in causes[0]["cause"]


def test_actions_lessons_impact_and_summary() -> None:
    actions = story.actions(FACTS)
    assert {a.kind for a in actions} == {"mitigate", "prevent", "process"}
    assert all(a.done for a in actions if a.kind == "mitigate")
    assert not any(a.done for a in actions if a.kind != "mitigate")
    kinds = [kind for kind, _ in story.lessons(FACTS)]
    assert set(kinds) == {"went_well", "went_wrong", "got_lucky"}
    assert story.impact(FACTS) == {
        "affected_users": 4, "peak_latency_ms": 4100.0, "baseline_latency_ms": 12.0,
        "degradation_factor": 14.2, "error_rate": 0.02, "affected_requests": 80,
    }  # fmt: skip
    text = story.summary(FACTS)
    assert "3,550 ms at p95" in text and "12 ms (99.5 % better)" in text


def test_nothing_unmeasured_is_invented() -> None:
    facts = copy.deepcopy(FACTS)
    facts["load_before"] = {}
    facts["triage_before"]["degradation_factor"] = None
    del facts["p95_improvement_pct"]
    impact = story.impact(facts)
    assert "peak_latency_ms" not in impact and "degradation_factor" not in impact
    assert "error_rate" not in impact
    assert "better" not in story.summary(facts)
    assert len(story.lessons(facts)) == len(story.lessons(FACTS)) - 1
