"""Per-route circuit breaker: closed -> open -> half-open -> closed.

The failure and slow ratios are over a sliding window of `window_s` seconds with bounded
memory. A success costs one integer increment (`calls += 1`, done inline by the guard); the
guard's housekeeping tick (`tick`, about once a second) snapshots that counter so the number of
calls in the window is a subtraction. Failures and slow calls go into a ring of ten time
buckets. The ratios are only evaluated when a call fails or is slow (a success can never open
the breaker) and only once the window holds `min_calls` calls. An open breaker refuses
instantly until `open_s` has passed; then `half_open_calls` probes are let through: all
succeed -> closed, one fails -> open again.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from crisisctl.guard.config import BreakerConfig

# Final: compiled code inlines them instead of looking them up in the module dict
CLOSED: Final = 0
OPEN: Final = 1
HALF_OPEN: Final = 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
_BUCKETS: Final = 10


class CircuitBreaker:
    """One route's breaker. `now` is a monotonic time in seconds."""

    __slots__ = (
        "_calls_floor",
        "_epochs",
        "_failures",
        "_slow",
        "_snapshots",
        "_width",
        "calls",
        "config",
        "opened_at",
        "opens_total",
        "probes_in_flight",
        "probes_ok",
        "reopen_at",
        "state",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = CLOSED
        #: calls finished while closed (cumulative); the guard increments it inline
        self.calls = 0
        self._snapshots: deque[tuple[float, int]] = deque()
        #: `calls` when the breaker last closed: older calls never count again
        self._calls_floor = 0
        self._width = config.window_s / _BUCKETS
        self._epochs = [-1] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._slow = [0] * _BUCKETS
        self.reopen_at = 0.0
        self.opened_at = 0.0
        self.probes_in_flight = 0
        self.probes_ok = 0
        self.opens_total = 0

    def tick(self, now: float) -> None:
        """Snapshot the call counter (housekeeping, about once a second)."""
        snapshots = self._snapshots
        snapshots.append((now, self.calls))
        horizon = now - self.config.window_s
        while len(snapshots) > 1 and snapshots[1][0] <= horizon:
            snapshots.popleft()

    def allow(self, now: float) -> bool:
        """Whether a call may go through (only consulted when the state is not CLOSED)."""
        if self.state == OPEN:
            if now < self.reopen_at:
                return False
            self.state = HALF_OPEN
            self.probes_in_flight = 0
            self.probes_ok = 0
        if self.state == HALF_OPEN:
            if self.probes_in_flight >= self.config.half_open_calls:
                return False
            self.probes_in_flight += 1
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker will let a probe through."""
        return max(0.0, self.reopen_at - now) if self.state == OPEN else 1.0

    def success(self, now: float) -> None:
        """A call succeeded while not closed (a half-open probe)."""
        if self.state == HALF_OPEN:
            self.probes_in_flight = max(0, self.probes_in_flight - 1)
            self.probes_ok += 1
            if self.probes_ok >= self.config.half_open_calls:
                self._close(now)

    def failure(self, now: float, failed: bool, slow: bool) -> None:
        """A call failed or was slow (it was already counted in `calls` if closed)."""
        state = self.state
        if state != CLOSED:
            if state == HALF_OPEN:
                self.probes_in_flight = max(0, self.probes_in_flight - 1)
                self._open(now)
            return
        epoch = int(now / self._width)
        slot = epoch % _BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._failures[slot] = 0
            self._slow[slot] = 0
        if failed:
            self._failures[slot] += 1
        if slow:
            self._slow[slot] += 1
        calls, failures, slow_calls = self.window_counts(now)
        cfg = self.config
        if calls < cfg.min_calls:
            return
        if failures / calls >= cfg.failure_ratio or (
            cfg.slow_call_s is not None and slow_calls / calls >= cfg.slow_call_ratio
        ):
            self._open(now)

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one finished call (`failed`: an error, `slow`: past the slow-call threshold)."""
        if self.state == CLOSED:
            self.calls += 1
        if failed or slow:
            self.failure(now, failed, slow)
        else:
            self.success(now)

    def window_counts(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow) in the current window."""
        snapshots = self._snapshots
        horizon = now - self.config.window_s
        base = self._calls_floor
        for at, calls in snapshots:
            if at > horizon:
                break
            base = max(base, calls)
        epoch = int(now / self._width)
        oldest = epoch - _BUCKETS + 1
        failures = slow = 0
        for slot in range(_BUCKETS):
            if self._epochs[slot] >= oldest:
                failures += self._failures[slot]
                slow += self._slow[slot]
        return max(self.calls - base, failures, slow), failures, slow

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self.reopen_at = now + self.config.open_s
        self.opens_total += 1

    def _close(self, now: float) -> None:
        self.state = CLOSED
        self._epochs = [-1] * _BUCKETS
        # epoch -1 still lies in the window while now < window_s: drop the counts too
        self._failures = [0] * _BUCKETS
        self._slow = [0] * _BUCKETS
        # a fresh window: the calls before the outage must not dilute the next failures
        self._calls_floor = self.calls
        self._snapshots.clear()
        self._snapshots.append((now, self.calls))

    def describe(self, now: float) -> dict[str, object]:
        """JSON-able state for the status endpoint."""
        calls, failures, slow = self.window_counts(now)
        return {
            "state": STATE_NAMES[self.state],
            "window_calls": calls,
            "window_failures": failures,
            "window_slow": slow,
            "opens_total": self.opens_total,
            "retry_after_s": round(self.retry_after(now), 3) if self.state == OPEN else None,
        }
