"""The adaptive limit's picture of a service's unqueued latency: its dispersion and its no-load
reference (`ConcurrencyLimiter` feeds it one closed window at a time; guard/concurrency.py
documents the controller around it).

Dispersion — cv², the latency's squared coefficient of variation (variance / mean²), from
moving averages over windows of each window's own variance and of its mean: one window of fast
requests only has next to no variance, and the spread *between* windows is left out (a limit
that moves shifts whole windows, which is queueing, not dispersion).

Reference — the least mean, over the last `window_s`, of runs of consecutive windows holding
≥ `window_min` = max(10, 25 × cv²) samples together (means within about a fifth of the truth),
each plus its standard error (cv / sqrt(n): the minimum of many noisy means is biased low). A
run summed while the dispersion was still underestimated (fewer than half the samples it asks
now) is left out. For a steady latency (cv² ≈ 0) every window of ≥ 10 samples is a run and the
reference is the minimum window mean, as before the dispersion terms existed. With a skewed
latency (90 % of requests at 1 ms, 10 % at 50 ms) the minimum of small windows was a window of
fast requests only: 1.4 ms where the unqueued mean is 6 ms.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

#: the fewest samples a window closes with (unless it is a second old)
WINDOW_MIN_SAMPLES: Final = 10
#: how much of each window's mean and variance enters the latency's dispersion (EWMA)
DISPERSION_SMOOTHING: Final = 0.1
#: a window holds at least this many samples per unit of cv², so its mean is within about 1/5
#: of the true one (or WINDOW_MAX_S passed)
DISPERSION_SAMPLES: Final = 25.0
#: the most runs the reference remembers (50 ms windows over 30 s: 600)
NOLOAD_RUNS: Final = 1024


class LatencyReference:
    """cv² and the no-load latency of one limiter's service latency."""

    def __init__(self) -> None:
        #: the latency's squared coefficient of variation (None before the first window)
        self.cv2: float | None = None
        #: the samples a window needs before it may close (more for a dispersed latency)
        self.window_min = WINDOW_MIN_SAMPLES
        #: (time, mean latency, samples) of the runs of windows, the oldest first
        self.runs: deque[tuple[float, float, int]] = deque(maxlen=NOLOAD_RUNS)
        self._mean = 0.0
        self._variance = 0.0
        self._run_sum = 0.0
        self._run_n = 0

    def add_window(
        self, now: float, mean: float, square: float, n: int, window_s: float
    ) -> tuple[float, bool]:
        """Take a closed window (its mean latency, mean squared latency and `n` ≥ 1 samples):
        the no-load reference over the last `window_s`, and whether this window is near it
        (judged before old runs expire: otherwise, once the last unqueued run leaves, the
        queued latency becomes its own reference and counts as fresh)."""
        variance = max(0.0, square - mean * mean)
        if self.cv2 is None:
            self._mean, self._variance = mean, variance
        else:
            self._mean += DISPERSION_SMOOTHING * (mean - self._mean)
            self._variance += DISPERSION_SMOOTHING * (variance - self._variance)
        average = self._mean
        cv2 = self.cv2 = self._variance / (average * average) if average > 0 else 0.0
        cv = math.sqrt(cv2)
        self.window_min = max(WINDOW_MIN_SAMPLES, math.ceil(DISPERSION_SAMPLES * cv2))
        self._run_sum += mean * n
        self._run_n += n
        runs = self.runs
        if self._run_n >= self.window_min:
            runs.append((now, self._run_sum / self._run_n, self._run_n))
            self._run_sum = 0.0
            self._run_n = 0
        fewest = 0.5 * self.window_min
        noload = least = math.inf
        oldest = now - window_s
        for at, run_mean, count in runs:
            if count < fewest:
                continue
            candidate = run_mean * (1.0 + cv / math.sqrt(count))
            if candidate < least:
                least = candidate
            if candidate < noload and at >= oldest:
                noload = candidate
        own = mean * (1.0 + cv / math.sqrt(n))
        if noload == math.inf:
            noload = own  # no run long enough yet
        while runs and runs[0][0] < oldest:
            runs.popleft()
        return noload, own <= least * 1.1
