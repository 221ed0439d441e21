"""The demo's "p95 improved" expectation, including a "before" run with no answer in time."""

from __future__ import annotations

from crisisctl.lab.crisis import _latency_improved


def test_a_faster_p95_is_an_improvement_and_a_slower_one_is_not() -> None:
    assert _latency_improved({"p95": 92.5, "error_rate": 0.0})
    assert not _latency_improved({"p95": -10.0, "error_rate": 50.0})


def test_every_before_request_timing_out_then_answers_after_is_an_improvement() -> None:
    # compare has no p95 ratio when "before" answered nothing in time (p95 0 of no samples)
    assert _latency_improved({"p95": None, "error_rate": 100.0})
    assert not _latency_improved({"p95": None, "error_rate": 0.0})
    assert not _latency_improved({"p95": None, "error_rate": None})
