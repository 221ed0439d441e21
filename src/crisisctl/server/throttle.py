"""Sign-in throttling: too many failed sign-ins from one address → 429 for a while.

At most `max_failures` failures per client address within `window_s` seconds; beyond that the
address is refused (before any password is checked) until its oldest failure leaves the window.
A success clears the address's failures. Memory is bounded: at most `max_addresses` addresses
are tracked (the oldest tracked one is forgotten first). The address is the TCP peer's (serve
reads no proxy headers): behind a proxy every client shares the proxy's budget, so the limit
errs on refusing.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["SignInThrottle"]

MAX_ADDRESSES: Final = 10_000


class SignInThrottle:
    """Failed sign-ins per address in a sliding window."""

    def __init__(
        self, max_failures: int = 10, window_s: float = 60.0, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self.failures.get(address)
        if times is None:
            return None
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self.failures[address]
            return None
        return times

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until `address` may try again, or None when it may now."""
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(0.0, self.window_s - (now - times[0]))

    def failed(self, address: str, now: float) -> None:
        times = self._recent(address, now)
        if times is None:
            if len(self.failures) >= self.max_addresses:
                del self.failures[next(iter(self.failures))]
            times = self.failures[address] = deque(maxlen=self.max_failures)
        times.append(now)

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)
