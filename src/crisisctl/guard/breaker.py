"""Per-route circuit breaker: closed -> open -> half-open -> closed.

Calls are counted in a ring of ten time buckets covering `window_s`, so the failure and slow
ratios are over a sliding window with bounded memory and O(1) work per call. The ratios are
only evaluated when a call fails or is slow (a success can never open the breaker), and only
once the window holds `min_calls` calls. An open breaker refuses instantly until `open_s` has
passed; then `half_open_calls` probes are let through: all succeed -> closed, one fails -> open.
"""

from __future__ import annotations

from crisisctl.guard.config import BreakerConfig

CLOSED = 0
OPEN = 1
HALF_OPEN = 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}
_BUCKETS = 10


class CircuitBreaker:
    """One route's breaker. `now` is a monotonic time in seconds."""

    __slots__ = (
        "_calls",
        "_epochs",
        "_failures",
        "_slow",
        "_width",
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
        self._width = config.window_s / _BUCKETS
        self._epochs = [-1] * _BUCKETS
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._slow = [0] * _BUCKETS
        self.reopen_at = 0.0
        self.opened_at = 0.0
        self.probes_in_flight = 0
        self.probes_ok = 0
        self.opens_total = 0

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

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one finished call."""
        state = self.state
        if state != CLOSED:
            if state == HALF_OPEN:
                self.probes_in_flight = max(0, self.probes_in_flight - 1)
                if failed or slow:
                    self._open(now)
                else:
                    self.probes_ok += 1
                    if self.probes_ok >= self.config.half_open_calls:
                        self._close()
            return
        epoch = int(now / self._width)
        slot = epoch % _BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._calls[slot] = 0
            self._failures[slot] = 0
            self._slow[slot] = 0
        self._calls[slot] += 1
        if failed:
            self._failures[slot] += 1
        if slow:
            self._slow[slot] += 1
        if failed or slow:
            self._evaluate(now, epoch)

    def _evaluate(self, now: float, epoch: int) -> None:
        calls = failures = slow = 0
        oldest = epoch - _BUCKETS + 1
        for slot in range(_BUCKETS):
            if self._epochs[slot] >= oldest:
                calls += self._calls[slot]
                failures += self._failures[slot]
                slow += self._slow[slot]
        cfg = self.config
        if calls < cfg.min_calls:
            return
        if failures / calls >= cfg.failure_ratio or (
            cfg.slow_call_s is not None and slow / calls >= cfg.slow_call_ratio
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self.reopen_at = now + self.config.open_s
        self.opens_total += 1

    def _close(self) -> None:
        self.state = CLOSED
        self._epochs = [-1] * _BUCKETS

    def window_counts(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow) in the current window."""
        epoch = int(now / self._width)
        oldest = epoch - _BUCKETS + 1
        calls = failures = slow = 0
        for slot in range(_BUCKETS):
            if self._epochs[slot] >= oldest:
                calls += self._calls[slot]
                failures += self._failures[slot]
                slow += self._slow[slot]
        return calls, failures, slow

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
