"""In-memory rate limits: GCRA and sliding window, key expiry, mode factors, header values.

Every time is injected (`hit(key, now)`), so these tests are exact and never sleep.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crisisctl.guard.config import RateLimit, parse_limits
from crisisctl.guard.ratelimit import Decision, MemoryRateLimiter, RateLimitPolicy


def limiter(spec: str, strategy: str = "gcra") -> MemoryRateLimiter:
    return MemoryRateLimiter(RateLimitPolicy("test", parse_limits(spec), strategy))


def admitted(lim: MemoryRateLimiter, n: int, now: float, key: str = "k") -> int:
    return sum(lim.hit(key, now).allowed for _ in range(n))


# -- GCRA, one limit ---------------------------------------------------------------------------


def test_gcra_admits_exactly_amount_back_to_back_with_a_countdown() -> None:
    lim = limiter("10/second")
    decisions = [lim.hit("k", 100.0) for _ in range(10)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert [d.retry_after_s for d in decisions] == [0.0] * 10
    # reset = seconds until the quota is whole again: one interval per request used
    assert [round(d.reset_s, 9) for d in decisions] == [round(0.1 * i, 9) for i in range(1, 11)]
    refused = lim.hit("k", 100.0)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit_index == 0
    assert refused.retry_after_s == pytest.approx(0.1)
    assert refused.reset_s == pytest.approx(1.0)


def test_gcra_refusals_consume_nothing() -> None:
    lim = limiter("10/second")
    assert admitted(lim, 10, 0.0) == 10
    assert admitted(lim, 50, 0.0) == 0  # hammering while refused ...
    assert admitted(lim, 50, 0.05) == 0
    # ... does not push the next slot further away: exactly one is back after one interval
    assert admitted(lim, 5, 0.1) == 1
    refused = lim.hit("k", 0.1)
    assert refused.retry_after_s == pytest.approx(0.1)


def test_gcra_refills_over_time() -> None:
    lim = limiter("10/second")
    assert admitted(lim, 10, 0.0) == 10
    assert admitted(lim, 10, 0.35) == 3  # one interval = 0.1 s per request
    assert admitted(lim, 10, 2.0) == 10  # idle longer than the period: whole again
    assert admitted(lim, 1, 2.0) == 0


def test_gcra_keys_are_independent() -> None:
    lim = limiter("2/minute")
    assert admitted(lim, 3, 0.0, key="a") == 2
    assert admitted(lim, 3, 0.0, key="b") == 2
    assert lim.hit("a", 29.0).allowed is False
    assert lim.hit("a", 30.0).allowed is True  # interval = 30 s


# -- GCRA, stacked limits ----------------------------------------------------------------------


def test_gcra_stacked_limits() -> None:
    lim = limiter("2/second;5/minute")
    first = lim.hit("k", 0.0)
    # the tightest limit is the one reported (2/s has 1 left, 5/min has 4)
    assert first == Decision(True, 0, 1, 0.5, 0.0)
    assert lim.hit("k", 0.0).allowed
    refused = lim.hit("k", 0.0)
    assert (refused.allowed, refused.limit_index) == (False, 0)
    assert refused.retry_after_s == pytest.approx(0.5)
    assert lim.hit("k", 0.5).allowed
    assert lim.hit("k", 1.0).allowed
    fifth = lim.hit("k", 3.0)
    assert fifth.allowed
    # now the minute limit has nothing left (the per-second one has 1): it is the tightest
    assert (fifth.limit_index, fifth.remaining) == (1, 0)
    refused = lim.hit("k", 3.5)
    assert (refused.allowed, refused.limit_index) == (False, 1)
    # 5 hits put the minute TAT at 5 * 12 = 60 s; the 6th fits at 60 + 12 - 60 = 12 s
    assert refused.retry_after_s == pytest.approx(8.5)
    assert refused.reset_s == pytest.approx(56.5)
    # the per-second limit was not charged by the refusal: at 12 s both admit again
    assert not lim.hit("k", 11.99).allowed
    assert lim.hit("k", 12.0).allowed


def test_gcra_stacked_refusal_by_a_later_limit_charges_no_earlier_limit() -> None:
    lim = limiter("3/second;3/minute")
    assert admitted(lim, 3, 0.0) == 3
    for t in (1.0, 2.0, 3.0, 4.0):
        assert not lim.hit("k", t).allowed
    # minute limit: interval 20 s -> one back at 20 s; the second limit alone decides
    ok = lim.hit("k", 20.0)
    assert ok.allowed
    assert (ok.limit_index, ok.remaining) == (1, 0)


# -- sliding window ----------------------------------------------------------------------------


def test_sliding_window_weights_the_previous_window() -> None:
    lim = limiter("10/10 seconds", "sliding-window")
    # window [0, 10): ten at 5 s, then refused
    decisions = [lim.hit("k", 5.0) for _ in range(10)]
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert decisions[0].reset_s == pytest.approx(5.0)  # end of the current window
    refused = lim.hit("k", 5.0)
    assert not refused.allowed
    # estimate at 10 + x: 10 * (1 - x/10) <= 9  ->  x >= 1, i.e. 6 s from now
    assert refused.retry_after_s == pytest.approx(6.0)
    assert not lim.hit("k", 10.5).allowed  # 10 * 0.95 + 1 > 10
    assert lim.hit("k", 11.5).allowed  # 10 * 0.85 = 8.5 -> room for one
    assert not lim.hit("k", 11.5).allowed  # 8.5 + 1 + 1 > 10
    d = lim.hit("k", 13.5)  # 10 * 0.65 + 1 = 7.5 -> room for 2
    assert (d.allowed, d.remaining) == (True, 1)


def test_sliding_window_forgets_windows_more_than_one_behind() -> None:
    lim = limiter("3/10 seconds", "sliding-window")
    assert admitted(lim, 5, 9.0) == 3
    assert admitted(lim, 5, 20.0) == 3  # window 2: window 0 no longer weighs


def test_sliding_window_stacked_and_refusals_consume_nothing() -> None:
    lim = limiter("2/second;3/minute", "sliding-window")
    assert admitted(lim, 5, 0.1) == 2
    refused = lim.hit("k", 0.1)
    assert (refused.allowed, refused.limit_index) == (False, 0)
    assert admitted(lim, 5, 2.5) == 1  # the minute limit allows one more
    refused = lim.hit("k", 3.5)
    assert (refused.allowed, refused.limit_index) == (False, 1)
    assert refused.retry_after_s > 0


@settings(max_examples=150, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=8),
    period=st.sampled_from([1.0, 2.0, 10.0]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.5), min_size=1, max_size=120),
)
def test_sliding_window_never_exceeds_amount_in_a_fixed_window(
    amount: int, period: float, gaps: list[float]
) -> None:
    lim = MemoryRateLimiter(RateLimitPolicy("p", [RateLimit(amount, period)], "sliding-window"))
    now = 0.0
    per_window: dict[int, int] = {}
    for gap in gaps:
        now += gap
        d = lim.hit("k", now)
        if d.allowed:
            w = math.floor(now / period)
            per_window[w] = per_window.get(w, 0) + 1
            assert d.retry_after_s == 0.0
        else:
            assert d.retry_after_s > 0
    assert all(n <= amount for n in per_window.values())


# -- key expiry --------------------------------------------------------------------------------


def test_rotate_drops_idle_gcra_keys_after_two_periods() -> None:
    lim = limiter("5/10 seconds")
    lim.rotate(0.0)
    lim.hit("idle", 1.0)
    lim.hit("busy", 1.0)
    t = 1.0
    while t < 25.0:
        t += 1.0
        lim.hit("busy", t)
        lim.rotate(t)
        if t <= 10.0:
            assert len(lim) == 2
    # "idle" untouched since 1 s: gone after two rotations (≤ 2 longest periods + a tick)
    assert len(lim) == 1
    assert lim.hit("idle", t).remaining == 4  # a fresh key


def test_rotate_keeps_a_key_that_is_used_again() -> None:
    lim = limiter("2/10 seconds")
    lim.rotate(0.0)
    assert admitted(lim, 2, 9.0) == 2
    lim.rotate(10.0)  # -> previous generation
    assert not lim.hit("k", 11.0).allowed  # still refuses, and is promoted back
    lim.rotate(20.0)
    lim.rotate(30.0)
    # the refusal does not make it younger (nothing was written) but being read moved it to
    # the current generation at 11 s; at 30 s its TAT (19 s) is long past anyway
    assert lim.hit("k", 30.0).remaining == 1


@pytest.mark.parametrize("strategy", ["gcra", "sliding-window"])
def test_rotation_keeps_a_key_while_it_can_refuse(strategy: str) -> None:
    """A key used at the very end of a generation is dropped one period later at the
    earliest; a sliding-window count still weighs for up to two periods after it was made."""
    policy = RateLimitPolicy("p", parse_limits("5/10 seconds"), strategy)
    rotated, reference = MemoryRateLimiter(policy), MemoryRateLimiter(policy)
    rotated.rotate(5.0)  # the ticker's phase: generations turn at 5, 15, 25 s
    for _ in range(5):
        assert rotated.hit("k", 14.9).allowed and reference.hit("k", 14.9).allowed
    for t in (15.0, 16.0, 20.0, 24.0, 25.0, 26.0):
        rotated.rotate(t)
    # at 26 s the sliding estimate is 5 * 0.4 = 2: three more fit, not five
    got = [rotated.hit("k", 26.0).allowed for _ in range(5)]
    assert got == [reference.hit("k", 26.0).allowed for _ in range(5)]
    assert got == ([True] * 5 if strategy == "gcra" else [True, True, True, False, False])


@pytest.mark.parametrize("strategy", ["gcra", "sliding-window"])
@settings(max_examples=300, deadline=None)
@given(
    spec=st.sampled_from(["3/10 seconds", "5/10 seconds;2/second", "1/5 seconds", "4/3 seconds"]),
    events=st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=4.0)),
            st.sampled_from(["a", "b", "c"]),
        ),
        min_size=1,
        max_size=150,
    ),
    rotate_every=st.sampled_from([0.25, 1.0, 2.5]),
    first_rotation=st.floats(min_value=0.0, max_value=10.0),
)
def test_rotation_never_changes_a_decision(
    strategy: str,
    spec: str,
    events: list[tuple[float, str]],
    rotate_every: float,
    first_rotation: float,
) -> None:
    """Expiry only drops keys that could no longer refuse: with rotation (as the guard's ticker
    does it) every decision is the same as without any expiry at all."""
    policy = RateLimitPolicy("p", parse_limits(spec), strategy)
    rotated = MemoryRateLimiter(policy)
    reference = MemoryRateLimiter(policy)
    now = 0.0
    next_rotation = first_rotation  # the ticker's phase is unrelated to the windows
    for gap, key in events:
        now += gap
        while next_rotation <= now:
            rotated.rotate(next_rotation)
            next_rotation += rotate_every
        got, expected = rotated.hit(key, now), reference.hit(key, now)
        assert got[:3] == expected[:3], (now, key)  # allowed, limit index, remaining
        assert got[3:] == pytest.approx(expected[3:], abs=1e-9), (now, key)
    assert len(rotated) <= len(reference)


# -- mode factors ------------------------------------------------------------------------------


def test_set_factor_scales_amounts_and_keeps_state() -> None:
    policy = RateLimitPolicy("p", parse_limits("10/second;100/minute"), "gcra")
    lim = MemoryRateLimiter(policy)
    policy.set_factor(0.5)
    assert policy.limits == (RateLimit(5, 1.0), RateLimit(50, 60.0))
    assert admitted(lim, 10, 0.0) == 5
    assert policy.headers(lim.hit("k", 0.0))[0] == (
        b"ratelimit-policy",
        b'"5-per-1s";q=5;w=1, "50-per-60s";q=50;w=60',
    )
    policy.set_factor(1.0)
    assert policy.limits == policy.base_limits
    # 5 used at interval 0.2 s put the TAT at 1 s; at interval 0.1 s: 10 * 0.1 > 1 - 0 -> 0 free
    assert admitted(lim, 10, 0.0) == 0
    assert admitted(lim, 10, 0.5) == 5
    policy.set_factor(0.01)
    assert policy.limits == (RateLimit(1, 1.0), RateLimit(1, 60.0))  # never below 1
    assert policy.describe()["factor"] == 0.01


def test_set_factor_with_override_limits() -> None:
    policy = RateLimitPolicy("p", parse_limits("10/second"), "gcra")
    policy.set_factor(0.5, parse_limits("1/second"))
    assert policy.limits == (RateLimit(1, 1.0),)
    lim = MemoryRateLimiter(policy)
    assert admitted(lim, 5, 0.0) == 1
    policy.set_factor(1.0)
    assert policy.limits == (RateLimit(10, 1.0),)
    assert policy.describe()["base_limits"] == ["10/1s"]


def test_set_factor_rounds_without_float_noise() -> None:
    policy = RateLimitPolicy("p", parse_limits("10/second"), "gcra")
    policy.set_factor(0.7)  # 10 * 0.7 = 6.999999999999999
    assert policy.limits == (RateLimit(7, 1.0),)


# -- headers -----------------------------------------------------------------------------------


def test_headers_after_admission() -> None:
    lim = limiter("10/second")
    d = lim.hit("k", 0.0)
    assert lim.policy.headers(d) == [
        (b"ratelimit-policy", b'"10-per-1s";q=10;w=1'),
        (b"ratelimit", b'"10-per-1s";r=9;t=1'),
    ]


def test_headers_when_refused() -> None:
    lim = limiter("2/minute")
    lim.hit("k", 0.0)
    lim.hit("k", 0.0)
    d = lim.hit("k", 0.0)
    assert not d.allowed
    assert lim.policy.headers(d) == [
        (b"ratelimit-policy", b'"2-per-60s";q=2;w=60'),
        (b"ratelimit", b'"2-per-60s";r=0;t=60'),
    ]


def test_headers_for_ahead_match_headers() -> None:
    lim = limiter("10/second")
    fast = limiter("10/second")
    for i in range(10):
        ahead = fast.hit_one("k", 0.0)
        d = lim.hit("k", 0.0)
        assert fast.policy.headers_for_ahead(ahead) == lim.policy.headers(d), i
    assert lim.policy.headers_for_ahead(0.1) == [
        (b"ratelimit-policy", b'"10-per-1s";q=10;w=1'),
        (b"ratelimit", b'"10-per-1s";r=9;t=1'),
    ]


def test_stacked_headers_name_the_tightest_limit() -> None:
    lim = limiter("10/second;12/minute")
    for _ in range(11):
        d = lim.hit("k", 0.0)
    assert not d.allowed
    # at 1 s: the second is free again, the minute TAT goes 50 -> 55 s (interval 5 s)
    assert lim.policy.headers(lim.hit("k", 1.0)) == [
        (b"ratelimit-policy", b'"10-per-1s";q=10;w=1, "12-per-60s";q=12;w=60'),
        (b"ratelimit", b'"12-per-60s";r=1;t=54'),
    ]


def test_header_lines_are_formatted_once_per_value() -> None:
    """Issue 14, point 13: stacked limits format their header once per (limit, remaining,
    seconds), not once per request."""
    lim = limiter("1000/second;50000/minute")
    first = lim.policy.headers(lim.hit("a", 0.0))
    assert lim.policy.headers(lim.hit("b", 0.0)) is first
    lim.policy.set_factor(0.5)  # the policy changed: nothing stale is served
    lines = lim.policy.headers(lim.hit("c", 10.0))
    assert lines is not first
    assert lines[0] == (
        b"ratelimit-policy",
        b'"500-per-1s";q=500;w=1, "25000-per-60s";q=25000;w=60',
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(min_value=0, max_value=1),
            st.integers(min_value=0, max_value=20),
            st.floats(min_value=0.0, max_value=120.0),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_cached_header_lines_equal_fresh_ones(items: list[tuple[bool, int, int, float]]) -> None:
    cached = RateLimitPolicy("p", parse_limits("10/second;12/minute"), "gcra")
    for allowed, index, remaining, reset in items + items:
        d = Decision(allowed, index, remaining, reset, 0.0)
        fresh = RateLimitPolicy("p", parse_limits("10/second;12/minute"), "gcra")
        assert cached.headers(d) == fresh.headers(d)


# -- properties --------------------------------------------------------------------------------

request_gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=0.5)), min_size=1, max_size=200
)


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=20),
    period=st.sampled_from([0.5, 1.0, 3.0, 60.0]),
    gaps=request_gaps,
    start=st.floats(min_value=0.0, max_value=1e6),
)
def test_gcra_never_admits_more_than_burst_plus_rate(
    amount: int, period: float, gaps: list[float], start: float
) -> None:
    """In any interval [a, b] at most amount + (b - a) / interval requests are admitted."""
    lim = MemoryRateLimiter(RateLimitPolicy("p", [RateLimit(amount, period)], "gcra"))
    interval = period / amount
    now = start
    times = []
    for gap in gaps:
        now += gap
        if lim.hit("k", now).allowed:
            times.append(now)
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= amount + (times[j] - times[i]) / interval + 1e-6


@settings(max_examples=100, deadline=None)
@given(gaps=request_gaps)
def test_gcra_admits_everything_the_limit_allows(gaps: list[float]) -> None:
    """A burst of `amount` after an idle period is never refused."""
    lim = limiter("5/second")
    now = 0.0
    for gap in gaps:
        now += gap
        lim.hit("k", now)
    now += 1.0
    assert admitted(lim, 5, now) == 5


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=20),
    period=st.sampled_from([0.5, 1.0, 3.0, 60.0]),
    gaps=request_gaps,
)
def test_hit_one_agrees_with_hit(amount: int, period: float, gaps: list[float]) -> None:
    policy = RateLimitPolicy("p", [RateLimit(amount, period)], "gcra")
    assert policy.fast
    slow, fast = MemoryRateLimiter(policy), MemoryRateLimiter(policy)
    now = 0.0
    for gap in gaps:
        now += gap
        d = slow.hit("k", now)
        ahead = fast.hit_one("k", now)
        assert (ahead >= 0.0) == d.allowed
        if d.allowed:
            assert ahead == pytest.approx(d.reset_s)
            assert policy.headers_for_ahead(ahead) == policy.headers(d)
        else:
            assert ahead == -1.0


def test_the_header_cache_of_a_long_period_keeps_every_remaining_apart() -> None:
    """`headers_for_ahead` caches header lines by (remaining, whole seconds of reset) packed
    in one integer. With the seconds in a fixed 24 bits (194 days), a limit of 3 per 400 days
    gave ``r=1;t=17782784`` the key of ``r=0;t=34560000`` and answered with the wrong line."""
    policy = RateLimitPolicy("p", parse_limits("3 per 400 days"), "gcra")
    limiter = MemoryRateLimiter(policy)
    for _ in range(3):
        ahead = limiter.hit_one("k", 0.0)
    assert policy.headers_for_ahead(ahead)[-1] == (
        b"ratelimit",
        b'"3-per-34560000s";r=0;t=34560000',
    )
    now = 3 * 11_520_000.0 + 11_520_000.0 - 17_782_783.5  # ahead 17,782,783.5 s: r=1
    ahead = limiter.hit_one("k", now)
    assert ahead == pytest.approx(17_782_783.5)
    assert policy.headers_for_ahead(ahead)[-1] == (
        b"ratelimit",
        b'"3-per-34560000s";r=1;t=17782784',
    )


def test_the_last_header_lines_are_those_of_the_last_decision() -> None:
    """`lines_for`'s shortcut (the same index, remaining and reset as last time) never answers
    another decision's lines."""
    policy = RateLimitPolicy("p", parse_limits("10/second;100/minute"), "gcra")
    for index, remaining, reset in [(0, 9, 1.0), (0, 9, 1.0), (1, 9, 1.0), (0, 8, 1.0),
                                    (0, 8, 0.5), (0, 8, 2.0), (0, 9, 1.0)]:  # fmt: skip
        expected = f'"{("10-per-1s", "100-per-60s")[index]}";r={remaining};t={math.ceil(reset)}'
        assert policy.steady_lines_for(index, remaining, reset)[-1] == (
            b"ratelimit",
            expected.encode(),
        )


@settings(max_examples=200, deadline=None)
@given(
    gaps=request_gaps,
    keys=st.lists(st.sampled_from(["a", "b", "c"]), min_size=200, max_size=200),
    spec=st.sampled_from(["3/second;10/minute", "1/second;2/5 seconds", "5/2 seconds;6/3 seconds"]),
    rotate_every=st.integers(min_value=3, max_value=50),
)
def test_admit_stacked_agrees_with_hit(
    gaps: list[float], keys: list[str], spec: str, rotate_every: int
) -> None:
    """The guard's stacked-limit path (issue 14, point 13) against the readable `hit`: same
    admissions, same header lines, same state, and `hit` after a refusal gives its figures."""
    policy = RateLimitPolicy("p", parse_limits(spec), "gcra")
    assert policy.stacked
    slow, fast = MemoryRateLimiter(policy), MemoryRateLimiter(policy)
    now = 0.0
    for i, (gap, key) in enumerate(zip(gaps, keys, strict=False)):
        now += gap
        if i % rotate_every == 0:
            slow.rotate(now)
            fast.rotate(now)
        d = slow.hit(key, now)
        lines = fast.admit_stacked(key, now)
        assert (lines is not None) == d.allowed
        if lines is not None:
            assert lines == policy.headers(d)
        else:
            assert fast.hit(key, now) == d
        assert fast._current == slow._current
        assert fast._previous == slow._previous


@settings(max_examples=100, deadline=None)
@given(
    gaps=request_gaps,
    spec=st.sampled_from(["3/second;10/minute", "1/second;2/5 seconds", "5/2 seconds;6/3 seconds"]),
)
def test_stacked_gcra_respects_every_limit(gaps: list[float], spec: str) -> None:
    limits = parse_limits(spec)
    lim = limiter(spec)
    now = 0.0
    times = []
    for gap in gaps:
        now += gap
        if lim.hit("k", now).allowed:
            times.append(now)
    for limit in limits:
        interval = limit.period / limit.amount
        for i in range(len(times)):
            for j in range(i, len(times)):
                assert j - i + 1 <= limit.amount + (times[j] - times[i]) / interval + 1e-6
