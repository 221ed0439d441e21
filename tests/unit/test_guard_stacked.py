"""The guard's path for stacked GCRA limits (`MemoryRateLimiter.admit_stacked`, issue 14,
point 13) agrees with the readable `MemoryRateLimiter.hit` and `RateLimitPolicy.headers`:
a real `Guard` driven through its ASGI interface beside the reference, same clients, same
instants, same emergency switches; every status, RateLimit header and Retry-After compared.
Helpers and the frozen clock are those of test_guard_inlined.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import event, given
from hypothesis import strategies as st
from test_guard_inlined import (
    NO_BREAKER,
    OFF,
    RATE_HEADERS,
    SETTINGS,
    ScriptedApp,
    arrivals,
    call,
    header_key,
    run,
)

from crisisctl.guard import Guard, GuardConfig
from crisisctl.guard.config import EmergencyConfig, parse_limits
from crisisctl.guard.ratelimit import MemoryRateLimiter, RateLimitPolicy

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
    reference = RateLimitPolicy("default", parse_limits(spec), "gcra")
    assert reference.stacked
    limiter = MemoryRateLimiter(reference)
    interval = reference.single[1]
    factor = EmergencyConfig().rate_factor

    async def scenario() -> None:
        app = ScriptedApp(guard_clock)
        config = GuardConfig(
            token="",
            rate_limit=spec,
            concurrency=OFF,
            breaker=NO_BREAKER,
            key_func=None if by_peer else header_key,
        )
        guard = Guard(app, config)
        admitted = 0
        try:
            for client, (intervals, seconds), mode in events:
                if mode:
                    guard.set_mode(mode, actor="test")
                    reference.set_factor(factor if mode == "emergency" else 1.0)
                assert guard_clock.now is not None
                guard_clock.now += intervals * interval + seconds
                key = f"10.0.0.{client}"
                response = await call(guard, key)
                decision = limiter.hit(key, guard_clock.now)
                expected = reference.headers(decision)
                if decision.allowed:
                    admitted += 1
                    assert response.status == 200
                    assert response.headers(*RATE_HEADERS) == expected
                else:
                    assert response.status == 429
                    retry = response.headers(b"retry-after")
                    assert response.headers(*RATE_HEADERS) == retry + expected
                    assert response.json()["retry_after_s"] == round(decision.retry_after_s, 3)
            assert app.calls == admitted
            event(f"refused: {admitted < len(events)}")
        finally:
            await guard.aclose()

    run(guard_clock, scenario())
