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

Cost. A window closes every 50 ms per route under load, so the reference is asked for often:
50 busy routes ask a thousand times a second. Scanning every run of the last 30 s (600 per
route) cost ~49 µs a call, ~5 % of a core at 13,000 requests a second. Only the runs that can
still be the least are kept: a run is dropped once a later one is as fast or faster and holds
as many samples or more, since that one's candidate is never larger (cv ≥ 0), it passes the
`fewest` filter whenever the older one does, and it stays within `window_s` longer. The
answers are those of the scan over every run (`tests/unit/test_latency_reference.py` drives
both with the same windows); with a steady latency a few dozen runs remain.
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
        #: (time, mean latency, samples, serial) of the runs of windows that can still be the
        #: least (the module's docstring), the oldest first; serials count every run
        self.runs: deque[tuple[float, float, int, int]] = deque()
        self._serial = 0
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
        squared = average * average  # (0 for a mean below 1e-154 too: no division by it)
        cv2 = self.cv2 = self._variance / squared if squared > 0.0 else 0.0
        cv = math.sqrt(cv2)
        self.window_min = max(WINDOW_MIN_SAMPLES, math.ceil(DISPERSION_SAMPLES * cv2))
        self._run_sum += mean * n
        self._run_n += n
        runs = self.runs
        if self._run_n >= self.window_min:
            self.add_run(now, self._run_sum / self._run_n, self._run_n)
            self._run_sum = 0.0
            self._run_n = 0
        fewest = 0.5 * self.window_min
        noload = least = math.inf
        oldest = now - window_s
        for at, run_mean, count, _ in runs:
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

    def add_run(self, at: float, mean: float, n: int) -> None:
        """Remember a run of windows (`n` samples of `mean` latency, ended at `at`); the runs
        it makes useless go (`mean` no lower, samples no more), and so does any run older
        than the last `NOLOAD_RUNS`."""
        runs = self.runs
        serial = self._serial = self._serial + 1
        for _, run_mean, count, _ in runs:
            if run_mean >= mean and count <= n:
                kept = [run for run in runs if run[1] < mean or run[2] > n]
                runs.clear()
                runs.extend(kept)
                break
        runs.append((at, mean, n, serial))
        oldest_serial = serial - NOLOAD_RUNS
        while runs[0][3] <= oldest_serial:
            runs.popleft()
