"""The adaptive limit's no-load reference keeps only the runs that can still be the least, and
answers exactly as the plain scan over every run of the last `window_s` does."""

from __future__ import annotations

import math
import random
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from crisisctl.guard.latency_reference import (
    DISPERSION_SAMPLES,
    DISPERSION_SMOOTHING,
    NOLOAD_RUNS,
    WINDOW_MIN_SAMPLES,
    LatencyReference,
)

WINDOW_S = 30.0


class PlainReference:
    """The readable original: every run of the last NOLOAD_RUNS kept, all of them scanned."""

    def __init__(self) -> None:
        self.cv2: float | None = None
        self.window_min = WINDOW_MIN_SAMPLES
        self.runs: deque[tuple[float, float, int]] = deque(maxlen=NOLOAD_RUNS)
        self._mean = 0.0
        self._variance = 0.0
        self._run_sum = 0.0
        self._run_n = 0

    def add_window(
        self, now: float, mean: float, square: float, n: int, window_s: float
    ) -> tuple[float, bool]:
        variance = max(0.0, square - mean * mean)
        if self.cv2 is None:
            self._mean, self._variance = mean, variance
        else:
            self._mean += DISPERSION_SMOOTHING * (mean - self._mean)
            self._variance += DISPERSION_SMOOTHING * (variance - self._variance)
        average = self._mean
        squared = average * average  # (0 for a mean below 1e-154 too: no division by it)
        cv2 = self.cv2 = self._variance / squared if squared > 0.0 else 0.0
        cv = math.sqrt(cv2)
        self.window_min = max(WINDOW_MIN_SAMPLES, math.ceil(DISPERSION_SAMPLES * cv2))
        self._run_sum += mean * n
        self._run_n += n
        if self._run_n >= self.window_min:
            self.runs.append((now, self._run_sum / self._run_n, self._run_n))
            self._run_sum = 0.0
            self._run_n = 0
        fewest = 0.5 * self.window_min
        noload = least = math.inf
        oldest = now - window_s
        for at, run_mean, count in self.runs:
            if count < fewest:
                continue
            candidate = run_mean * (1.0 + cv / math.sqrt(count))
            if candidate < least:
                least = candidate
            if candidate < noload and at >= oldest:
                noload = candidate
        own = mean * (1.0 + cv / math.sqrt(n))
        if noload == math.inf:
            noload = own
        while self.runs and self.runs[0][0] < oldest:
            self.runs.popleft()
        return noload, own <= least * 1.1


Window = tuple[float, float, float, int]  # (seconds since the last, mean, cv² of it, samples)

windows = st.lists(
    st.tuples(
        st.sampled_from([0.001, 0.05, 0.05, 0.2, 1.0, 7.0]),
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
        st.floats(min_value=0.0, max_value=4.0, allow_nan=False),
        st.integers(min_value=1, max_value=200),
    ),
    max_size=300,
)


def drive(sequence: list[Window]) -> None:
    fast, plain = LatencyReference(), PlainReference()
    now = 0.0
    for gap, mean, own_cv2, n in sequence:
        now += gap
        square = mean * mean * (1.0 + own_cv2)
        assert fast.add_window(now, mean, square, n, WINDOW_S) == plain.add_window(
            now, mean, square, n, WINDOW_S
        )
        assert (fast.cv2, fast.window_min) == (plain.cv2, plain.window_min)
        kept = {(at, run_mean, count) for at, run_mean, count, _ in fast.runs}
        assert kept <= set(plain.runs)


@given(windows)
def test_the_kept_runs_answer_as_the_scan_over_every_run(sequence: list[Window]) -> None:
    drive(sequence)


def test_more_runs_than_it_remembers_answer_as_the_scan_too() -> None:
    # windows 1 ms apart (a sudden overload closes them that fast): the last NOLOAD_RUNS runs
    # of the 30 s are the ones remembered, in both
    rng = random.Random(7)
    rising = [(0.001, 0.001 + i * 1e-6, 0.0, 10) for i in range(NOLOAD_RUNS + 300)]
    noisy = [(0.001, rng.uniform(0.001, 0.002), 0.01, rng.randint(10, 14)) for _ in range(3000)]
    drive(rising + noisy)


def test_with_a_steady_latency_a_few_dozen_runs_remain_of_600() -> None:
    rng = random.Random(3)
    reference = LatencyReference()
    now = 0.0
    for _ in range(1200):  # a minute of 50 ms windows of a busy route
        now += 0.05
        mean = rng.gauss(0.004, 0.0004)
        reference.add_window(now, mean, mean * mean * 1.02, rng.randint(11, 15), WINDOW_S)
    assert len(reference.runs) < 60
