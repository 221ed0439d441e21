"""Concurrency control tells concurrency shedding from a rate limit (validate.shedding), no server.

Hand-built exchanges pin each rule; a small discrete-event simulation of a closed-loop burst
against a concurrency limit and against a token bucket (the two things a 503 may come from)
checks the time-shape rule on every limit, service time and rate hypothesis draws.
"""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.guard.control import REFUSAL_MESSAGES
from crisisctl.validate.exchange import Exchange
from crisisctl.validate.parallel import ALONE_AFTER, ALONE_BEFORE, jittered, pause_for
from crisisctl.validate.report import CheckResult
from crisisctl.validate.shedding import (
    CONCURRENCY,
    RATE_LIMIT,
    UNEXPLAINED,
    evaluate_concurrency,
    refusal_cause,
    served_in_flight,
)

LONG = 2.0


def ex(sent: float, done: float, status: int | None = 200, **kw: object) -> Exchange:
    return Exchange(sent, done, status, **kw)  # type: ignore[arg-type]


# -- causes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exchange", "cause"),
    [(ex(0, 0, 503, reason="queue_full"), CONCURRENCY),
     (ex(0, 0, 429, reason="overloaded"), CONCURRENCY),  # the reason wins over the status
     (ex(0, 0, 503, reason="queue_timeout"), CONCURRENCY),
     (ex(0, 0, 429, reason="rate_limited"), RATE_LIMIT),
     (ex(0, 0, 503, reason="emergency"), "emergency"),
     (ex(0, 0, 503, reason="memory"), "memory"),
     (ex(0, 0, 503, reason="circuit_open"), "circuit_open"),
     (ex(0, 0, 503, reason="maintenance"), "other"),
     (ex(0, 0, 503, rate_headers=True), RATE_LIMIT),
     (ex(0, 0, 503, retry_after_s=60.0), RATE_LIMIT),   # waits for a rate window
     (ex(0, 0, 503, retry_after_s=1.0), UNEXPLAINED),   # a shedder's prompt retry
     (ex(0, 0, 429), RATE_LIMIT),                        # RFC 6585 without a reason
     (ex(0, 0, 503), UNEXPLAINED)],
)  # fmt: skip
def test_refusal_cause(exchange: Exchange, cause: str) -> None:
    assert refusal_cause(exchange, LONG) == cause


def test_every_guard_refusal_reason_is_understood() -> None:
    known = {"queue_full", "queue_timeout", "overloaded", "rate_limited", "emergency",
             "memory", "circuit_open"}  # fmt: skip
    assert set(REFUSAL_MESSAGES) | {"rate_limited"} == known
    for reason in known:
        assert refusal_cause(ex(0, 0, 503, reason=reason), LONG) != "other"


# -- served in flight ------------------------------------------------------------------------
intervals = st.lists(
    st.tuples(st.floats(0, 10), st.floats(0, 2), st.sampled_from([200, 200, 503, 429, None])),
    max_size=60,
)


@given(intervals)
def test_served_in_flight_counts_like_a_brute_force(items: list[tuple[float, float, int]]) -> None:
    exchanges = [ex(s, s + d, status) for s, d, status in items]
    counts, peak = served_in_flight(exchanges)
    for e, n in zip(exchanges, counts, strict=True):
        assert n == sum(1 for j in exchanges if j.served and j.sent <= e.sent < j.done)
    served = [n for e, n in zip(exchanges, counts, strict=True) if e.served]
    assert peak == max(served, default=0)


# -- the verdict -----------------------------------------------------------------------------
def verdict(
    burst: list[Exchange], alone: list[Exchange] | None = None, timed_out: bool = False
) -> CheckResult:
    return evaluate_concurrency(
        burst,
        alone if alone is not None else [ex(0, 0.2), ex(0.2, 0.4)],
        planned=200,
        connections=20,
        span_s=1.0,
        timed_out=timed_out,
    )


def full_then_refused(status: int = 503, **kw: object) -> list[Exchange]:
    """Four slow served requests in flight for a second; refusals while all four are in."""
    served = [ex(0.01 * i, 1.0) for i in range(4)]
    refused = [ex(0.1 + 0.05 * i, 0.1 + 0.05 * i + 0.001, status, **kw) for i in range(12)]
    return served + refused


def test_guard_reasons_pass_whatever_the_timing() -> None:
    burst = [ex(0, 0.001, 503, reason="queue_full") for _ in range(5)] + [ex(0, 0.3)]
    result = verdict(burst)
    assert result.passed, result.summary
    assert result.evidence["shed"] == 5 and result.evidence["causes"] == {CONCURRENCY: 5}
    assert "(the service's own reason: 5× queue_full)" in result.summary


def test_429s_without_a_reason_are_a_rate_limit_and_fail() -> None:
    result = verdict(full_then_refused(429))
    assert not result.passed
    assert "no refusal was concurrency shedding: 12× rate limit" in result.summary
    assert "a rate limit is not concurrency control" in result.summary


def test_503s_at_the_limit_and_never_alone_are_shedding() -> None:
    result = verdict(full_then_refused())
    assert result.passed, result.summary
    shape = result.evidence["shape"]
    assert shape["peak_served_in_flight"] == 4 and shape["at_limit"] == 12
    assert "(503s that came only while the service was full, peak 4 served" in result.summary


@pytest.mark.parametrize(
    "kw", [{"rate_headers": True}, {"retry_after_s": 30.0}, {"reason": "rate_limited"}]
)
def test_503s_that_speak_of_a_rate_are_not_shedding(kw: dict[str, object]) -> None:
    result = verdict(full_then_refused(**kw))
    assert not result.passed and result.evidence["causes"] == {RATE_LIMIT: 12}


def test_503s_to_a_request_sent_alone_are_not_shedding() -> None:
    alone = [ex(0, 0.2), ex(2.0, 2.001, 503)]
    result = verdict(full_then_refused(), alone)
    assert not result.passed
    assert "1 503s came to requests sent alone" in result.summary


def test_503s_while_little_is_in_flight_are_not_shedding() -> None:
    # a rate limit after its first allowance: refusals while one request of a peak of 8 runs
    served = [ex(0.001 * i, 0.2) for i in range(8)]
    served += [ex(0.3 + 0.1 * i, 0.5 + 0.1 * i) for i in range(6)]
    refused = [ex(0.35 + 0.1 * i, 0.351 + 0.1 * i, 503) for i in range(6)]
    result = verdict(served + refused)
    assert not result.passed
    assert "only 0 of 6 503s came while the service was full (≥ 4 of a peak of 8" in (
        result.summary
    )


@pytest.mark.parametrize(
    ("extra", "text"),
    [([ex(0, 5.0, None, error="timeout")], "requests failed instead of being shed (1 timeout)"),
     ([ex(0, 0.1, 500)], "1 responses were 5xx other than 503")],
)  # fmt: skip
def test_failures_are_not_shedding(extra: list[Exchange], text: str) -> None:
    result = verdict(full_then_refused() + extra)
    assert not result.passed and text in result.summary


def test_nothing_refused_and_cut_short() -> None:
    assert "nothing was shed with 429/503 (3×200)" in verdict([ex(0, 0.1)] * 3).summary
    cut = verdict(full_then_refused(), timed_out=True)
    assert not cut.passed and "did not finish in its time" in cut.summary


# -- a simulated burst -----------------------------------------------------------------------
def simulate(
    connections: int, service_s: float, admit: str, limit: int, rate: float, rng: random.Random
) -> tuple[list[Exchange], list[Exchange]]:
    """The check's traffic (parallel.py) against a server that admits by `admit`:

    "concurrency": at most `limit` requests at once; "bucket": a token bucket of depth `limit`
    refilled at `rate` per second. Admitted requests take `service_s`, refusals 1 ms; the
    network takes no time. Returns (burst, alone).
    """
    in_flight: list[float] = []  # end times of admitted requests
    tokens, last = float(limit), 0.0

    def decide(t: float) -> bool:
        nonlocal tokens, last
        while in_flight and in_flight[0] <= t:
            heapq.heappop(in_flight)
        if admit == "concurrency":
            ok = len(in_flight) < limit
        else:
            tokens = min(float(limit), tokens + (t - last) * rate)
            last = t
            ok = tokens >= 1.0
            tokens -= 1.0 if ok else 0.0
        if ok:
            heapq.heappush(in_flight, t + service_s)
        return ok

    def one(t: float) -> Exchange:
        return ex(t, t + service_s) if decide(t) else ex(t, t + 0.001, 503)

    alone: list[Exchange] = []
    t = 0.0
    for _ in range(ALONE_BEFORE):
        alone.append(one(t))
        t = alone[-1].done
    span = min(5.0, max(1.0, 3 * service_s))
    total = 200
    pause = pause_for(connections, total, span)
    start, end = t, t + span
    ready = [(start, worker) for worker in range(connections)]
    heapq.heapify(ready)
    burst: list[Exchange] = []
    while ready and len(burst) < total:
        at, worker = heapq.heappop(ready)
        if at >= end:
            continue
        e = one(at)
        burst.append(e)
        heapq.heappush(ready, (e.done if e.served else e.done + jittered(pause, rng), worker))
    t = max(e.done for e in burst)
    for _ in range(ALONE_AFTER):
        alone.append(one(t))
        t = alone[-1].done
    return burst, alone


@settings(max_examples=60, deadline=None)
@given(
    connections=st.integers(8, 40),
    service_ms=st.integers(50, 500),
    limit=st.integers(1, 6),
    rng=st.randoms(use_true_random=False),
)
def test_a_concurrency_limit_is_recognised(
    connections: int, service_ms: int, limit: int, rng: random.Random
) -> None:
    burst, alone = simulate(connections, service_ms / 1000.0, "concurrency", limit, 0.0, rng)
    result = evaluate_concurrency(burst, alone, planned=200, connections=connections, span_s=1.0)
    assert result.passed, result.summary
    assert result.evidence["alone"]["refused"] == 0


@settings(max_examples=60, deadline=None)
@given(
    connections=st.integers(8, 40),
    service_ms=st.integers(1, 500),
    depth=st.integers(4, 30),
    share=st.floats(0.05, 1 / 3),
    rng=st.randoms(use_true_random=False),
)
def test_a_token_bucket_is_never_taken_for_concurrency(
    connections: int, service_ms: int, depth: int, share: float, rng: random.Random
) -> None:
    # the bucket's refill keeps rate × service time ≤ a third of its depth in flight (the
    # module docstring says why a bucket whose refill matches its depth cannot be told apart)
    service_s = service_ms / 1000.0
    rate = max(1.0, share * depth / service_s)
    burst, alone = simulate(connections, service_s, "bucket", depth, rate, rng)
    result = evaluate_concurrency(burst, alone, planned=200, connections=connections, span_s=1.0)
    refused = result.evidence["refused"]
    assert result.evidence["shed"] == 0, (refused, result.summary)
    assert not result.passed
