"""The guard's path for stacked GCRA limits (`MemoryRateLimiter.admit_stacked`, issue 14,
point 13) agrees with the readable `MemoryRateLimiter.hit` and `RateLimitPolicy.headers`:
a real `Guard` driven through its ASGI interface beside the reference, same clients, same
instants, same emergency switches; every status, RateLimit header and Retry-After compared.
Helpers and the frozen clock are those of test_guard_inlined.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st
from test_guard_inlined import SETTINGS, arrivals, check_guard_agrees_with_limiter

from crisisctl.guard.config import parse_limits
from crisisctl.guard.ratelimit import RateLimitPolicy

if TYPE_CHECKING:
    from conftest import GuardClock


@SETTINGS
@given(
    spec=st.sampled_from(
        ["3/second;5/minute", "2/second;3/5 seconds", "5/2 seconds;6/3 seconds", "1/second;1/hour"]
    ),
    events=arrivals,
    by_peer=st.booleans(),
)
def test_stacked_limits_in_the_guard_agree_with_the_limiter(
    guard_clock: GuardClock,
    spec: str,
    events: list[tuple[int, tuple[float, float], str]],
    by_peer: bool,
) -> None:
    assert RateLimitPolicy("default", parse_limits(spec), "gcra").stacked
    check_guard_agrees_with_limiter(guard_clock, spec, events, by_peer)
