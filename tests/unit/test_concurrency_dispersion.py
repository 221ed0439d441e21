"""The adaptive limit on a dispersed latency (a few slow requests among many fast ones): its
no-load reference, its windows and its standing-overload queue."""

from __future__ import annotations

import random

from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import ConcurrencyConfig
from crisisctl.guard.latency_reference import WINDOW_MIN_SAMPLES

FAST_S, SLOW_S = 0.001, 0.050  # 90 % / 10 %: mean 5.9 ms, cv ≈ 2.5


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bimodal(rng: random.Random) -> float:
    return SLOW_S if rng.random() < 0.1 else FAST_S


def serve_one_by_one(lim: ConcurrencyLimiter, clock: FakeClock, seconds: float, seed: int) -> None:
    """Unloaded traffic: one request at a time, its latency drawn from the bimodal mix."""
    rng = random.Random(seed)
    end = clock.now + seconds
    while clock.now < end:
        assert lim.try_acquire()
        latency = bimodal(rng)
        clock.now += latency
        lim.release(clock(), latency)
        clock.now += 0.02  # 50 req/s at most


def test_the_reference_of_a_dispersed_latency_is_not_its_fast_mode() -> None:
    """The minimum of small windows' means is a window of fast requests only (1 ms, where the
    service's unqueued mean is 5.9 ms): the reference must stay near the true mean."""
    for seed in range(5):
        clock = FakeClock()
        lim = ConcurrencyLimiter(ConcurrencyConfig(), clock)
        serve_one_by_one(lim, clock, 20.0, seed)
        assert lim.rtt_noload is not None
        assert 0.6 * 0.0059 <= lim.rtt_noload <= 2.0 * 0.0059, (seed, lim.rtt_noload)


def test_a_dispersed_latency_gets_longer_windows_and_a_constant_one_does_not() -> None:
    clock = FakeClock()
    lim = ConcurrencyLimiter(ConcurrencyConfig(), clock)
    serve_one_by_one(lim, clock, 10.0, 1)
    assert lim.rtt_cv2 is not None and lim.rtt_cv2 > 1.0
    assert lim.window_min > 2 * WINDOW_MIN_SAMPLES
    steady = ConcurrencyLimiter(ConcurrencyConfig(), clock)
    for _ in range(200):
        assert steady.try_acquire()
        clock.now += 0.005
        steady.release(clock(), 0.005)
    assert steady.rtt_cv2 is not None and steady.rtt_cv2 < 0.01
    assert steady.window_min == WINDOW_MIN_SAMPLES
