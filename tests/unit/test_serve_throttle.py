"""Sign-in throttling: failures per address in a sliding window, bounded memory."""

from __future__ import annotations

from crisisctl.server.throttle import SignInThrottle


def test_an_address_is_refused_after_too_many_failures_until_the_window_passes() -> None:
    throttle = SignInThrottle(max_failures=3, window_s=60.0)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("a", t) is None
        throttle.failed("a", t)
    assert throttle.retry_after("a", 3.0) == 57.0
    assert throttle.retry_after("b", 3.0) is None  # other addresses are not affected
    assert throttle.retry_after("a", 60.0) is None  # the first failure left the window


def test_a_success_clears_the_failures() -> None:
    throttle = SignInThrottle(max_failures=2, window_s=60.0)
    throttle.failed("a", 0.0)
    throttle.succeeded("a")
    throttle.failed("a", 1.0)
    assert throttle.retry_after("a", 1.0) is None


def test_at_most_max_addresses_are_tracked() -> None:
    throttle = SignInThrottle(max_failures=1, window_s=60.0, max_addresses=100)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(throttle.failures) == 100
    assert throttle.retry_after("10.0.3.231", 1.0) is not None  # the newest is kept
    assert throttle.retry_after("10.0.0.0", 1.0) is None
