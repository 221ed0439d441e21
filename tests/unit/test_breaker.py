"""Circuit breaker: closed -> open -> half-open -> closed, on injected times.

The guard counts successes inline (`calls += 1`) and snapshots the counter once a second with
`tick()`; `record()` does the same bookkeeping for one call, so these tests drive the breaker
exactly as the guard does.
"""

from __future__ import annotations

import pytest

from crisisctl.guard.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from crisisctl.guard.config import BreakerConfig


def breaker(**overrides: float | int | None) -> CircuitBreaker:
    fields: dict[str, float | int | None] = {
        "window_s": 10.0,
        "min_calls": 4,
        "failure_ratio": 0.5,
        "open_s": 5.0,
        "half_open_calls": 2,
    }
    fields.update(overrides)
    return CircuitBreaker(BreakerConfig(**fields))  # type: ignore[arg-type]


def run(b: CircuitBreaker, start: float, calls: str, step: float = 0.0) -> float:
    """Record calls ("S" success, "F" failure, "L" slow success) from `start`; ticks each second
    like the guard's housekeeping. Returns the time after the last call."""
    now = start
    for kind in calls:
        b.record(now, failed=kind == "F", slow=kind == "L")
        now += step
    return now


def tick_until(b: CircuitBreaker, start: float, end: float) -> None:
    t = start
    while t <= end:
        b.tick(t)
        t += 1.0


def test_opens_on_failure_ratio_once_min_calls_reached() -> None:
    b = breaker()
    b.tick(0.0)
    run(b, 1.0, "SSF")
    assert b.state == CLOSED  # 1/3 failed, and fewer than min_calls anyway
    run(b, 1.1, "F")
    assert b.state == OPEN  # 2/4 = failure_ratio
    assert b.opens_total == 1
    assert b.opened_at == 1.1
    assert not b.allow(1.2)
    assert b.retry_after(1.2) == pytest.approx(4.9)


def test_does_not_open_before_min_calls() -> None:
    b = breaker(min_calls=5)
    b.tick(0.0)
    run(b, 1.0, "FFFF")
    assert b.state == CLOSED  # 100 % failures but only 4 calls
    assert b.window_counts(1.1) == (4, 4, 0)
    run(b, 1.1, "F")
    assert b.state == OPEN


def test_stays_closed_below_the_ratio() -> None:
    b = breaker(failure_ratio=0.6)
    b.tick(0.0)
    run(b, 1.0, "SSSSFSFSF")  # 3/9
    assert b.state == CLOSED
    run(b, 2.0, "FF")  # 5/11 < 0.6
    assert b.state == CLOSED
    run(b, 2.1, "F")  # 6/12 < 0.6
    assert b.state == CLOSED
    run(b, 2.2, "FF")  # 8/14 = 0.57
    assert b.state == CLOSED
    run(b, 2.3, "F")  # 9/15 = 0.6
    assert b.state == OPEN


def test_successes_never_open_it() -> None:
    b = breaker(min_calls=1)
    run(b, 0.0, "S" * 100)
    assert b.state == CLOSED


def test_slow_call_ratio() -> None:
    b = breaker(slow_call_s=0.5, slow_call_ratio=0.8, min_calls=5)
    b.tick(0.0)
    run(b, 1.0, "SLLL")
    run(b, 1.1, "L")  # 4/5 slow = 0.8, but min_calls just reached now
    assert b.state == OPEN
    assert b.window_counts(1.2) == (5, 0, 4)

    b = breaker(slow_call_s=0.5, slow_call_ratio=0.8, min_calls=5)
    run(b, 1.0, "SSLLLL")  # 4/6 slow
    assert b.state == CLOSED


def test_slow_calls_are_ignored_without_slow_call_s() -> None:
    b = breaker(min_calls=2)
    run(b, 0.0, "LLLL")
    assert b.state == CLOSED


def test_half_open_limits_probes_and_closes_after_successes() -> None:
    b = breaker(half_open_calls=2)
    run(b, 0.0, "FFFF")
    assert b.state == OPEN
    assert not b.allow(4.99)
    assert b.allow(5.0)  # open_s passed: first probe
    assert b.state == HALF_OPEN
    assert b.allow(5.0)  # second probe
    assert not b.allow(5.0)  # no third one while two are in flight
    assert b.retry_after(5.0) == 1.0
    b.success(5.1)
    assert b.state == HALF_OPEN
    assert b.allow(5.1)  # a slot was freed
    b.success(5.2)
    assert b.state == CLOSED  # half_open_calls successes
    # closing forgets the failures: a single new failure does not re-open it
    b.record(5.3, failed=True, slow=False)
    assert b.state == CLOSED
    assert b.window_counts(5.3) == (1, 1, 0)


def test_probe_failure_reopens() -> None:
    b = breaker()
    run(b, 0.0, "FFFF")
    assert b.allow(5.0)
    b.record(5.2, failed=True, slow=False)
    assert b.state == OPEN
    assert b.opens_total == 2
    assert b.reopen_at == 10.2
    assert not b.allow(10.1)
    assert b.allow(10.2)
    assert b.state == HALF_OPEN
    assert b.probes_in_flight == 1


def test_calls_finishing_while_open_change_nothing() -> None:
    b = breaker()
    run(b, 0.0, "FFFF")
    calls = b.calls
    b.success(0.5)  # admitted before the breaker opened, finished after
    b.failure(0.5, failed=True, slow=False)
    assert b.state == OPEN
    assert b.reopen_at == 5.0
    assert b.calls == calls


def test_window_slides_and_forgets_old_failures() -> None:
    b = breaker(min_calls=4, failure_ratio=0.5)
    tick_until(b, 0.0, 0.0)
    run(b, 0.5, "FFF")  # 3 failures: below min_calls, closed
    assert b.state == CLOSED
    tick_until(b, 1.0, 12.0)
    # 12 s later those failures and calls have left the 10 s window:
    # 3 successes + 1 failure = 1/4, closed (with the old ones it would be 4/7)
    run(b, 12.1, "SSSF")
    assert b.state == CLOSED
    calls, failures, _ = b.window_counts(12.2)
    assert failures == 1
    assert calls == 4


def test_without_sliding_the_same_calls_would_open_it() -> None:
    b = breaker(min_calls=4, failure_ratio=0.5)
    tick_until(b, 0.0, 0.0)
    run(b, 0.5, "FFF")
    tick_until(b, 1.0, 5.0)  # still inside the window
    run(b, 5.1, "SSSF")
    assert b.state == OPEN  # 4/7


def test_describe() -> None:
    b = breaker()
    b.tick(0.0)
    run(b, 1.0, "SF")
    assert b.describe(1.5) == {
        "state": "closed",
        "window_calls": 2,
        "window_failures": 1,
        "window_slow": 0,
        "opens_total": 0,
        "retry_after_s": None,
    }
    run(b, 1.1, "FF")
    assert b.describe(2.0)["state"] == "open"
    assert b.describe(2.0)["retry_after_s"] == 4.1


def test_a_relapse_right_after_closing_reopens_it() -> None:
    """Calls made before the outage must not dilute the failures after recovery."""
    b = breaker(min_calls=4, failure_ratio=0.5, half_open_calls=1)
    t = 50_000.0  # a realistic monotonic clock
    for _ in range(30):  # a long healthy history, ticked every second
        b.tick(t)
        run(b, t, "S" * 100)
        t += 1.0
    b.tick(t)
    run(b, t, "SSFFFF")  # 4/6 failed in the last second, but 4/3006 in the last 10 s ...
    assert b.state == CLOSED  # ... so the window ratio keeps it closed
    t += 0.5
    run(b, t, "F" * 3000)
    assert b.state == OPEN
    t += 5.0
    assert b.allow(t)
    b.success(t)
    assert b.state == CLOSED
    # the route fails again at once: 4 calls, 4 failures, min_calls reached -> open
    run(b, t + 0.1, "FFFF")
    assert b.state == OPEN
