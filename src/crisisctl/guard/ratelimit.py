"""Per-key rate limits kept in process memory: GCRA (token bucket) and sliding-window counters.

One `MemoryRateLimiter` serves one policy (one rule's stacked limits, e.g. 10/s and 300/min).
A request passes only if every limit admits it; a refused request consumes nothing.

GCRA (generic cell rate algorithm) keeps one number per key and limit, the theoretical
arrival time TAT. With emission interval T = period / amount:

    tat'   = max(TAT, now) + T
    admit  iff  tat' - now <= period          (at most `amount` back-to-back requests)
    remaining = floor((period - (tat' - now)) / T)
    reset     = tat' - now                    (seconds until the quota is whole again)
    retry     = TAT + T - period - now        (when refused)

The sliding-window counter keeps (window index, previous count, current count) per limit and
estimates the rate over the last `period` as prev * (1 - elapsed/period) + current.

Idle keys cost nothing: state lives in two generations that rotate every longest-period
seconds (two periods for sliding windows, whose count still weighs in the next window), so a
key untouched for two rotations is dropped wholesale (O(1), no scanning), and an entry is never
dropped while it could still refuse a request. Every limit is scaled by a
mode factor (emergency tightens, recovering ramps back) without losing state.

Every backend's limiter is a `RateLimiter` (the Protocol below): `MemoryRateLimiter` here,
`RedisRateLimiter` in redis_store.py (Redis and Redis Cluster). `open_storage(url)` is the one
factory: it reads the storage URL once and returns the `RateLimitStorage` that builds the
limiter of each policy (memory:// here; redis://, rediss://, unix://, redis+cluster:// and
rediss+cluster:// from redis_store.py, imported only then, so the guard stays light).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from crisisctl.guard.config import GuardConfigError, RateLimit

if TYPE_CHECKING:
    from crisisctl.guard.modes import ModeState

_EPS: Final = 1e-9
#: `RateLimitPolicy.gcra`: one GCRA limit (the guard calls `MemoryRateLimiter.admit_one`),
#: several (`admit_stacked`)
GCRA_ONE: Final = 1
GCRA_STACKED: Final = 2


class Decision(NamedTuple):
    """Outcome of one hit: the tightest limit's figures, used for headers and Retry-After."""

    allowed: bool
    #: index of the limit that refused, or of the one with the least room left
    limit_index: int
    remaining: int
    #: seconds until that limit's quota is whole again
    reset_s: float
    #: seconds the client should wait (0 when allowed)
    retry_after_s: float


_new_tuple = tuple.__new__


def decision(
    allowed: bool, limit_index: int, remaining: int, reset_s: float, retry_after_s: float
) -> Decision:
    """Build a Decision without NamedTuple's slow Python-level constructor (hot path)."""
    return _new_tuple(Decision, (allowed, limit_index, remaining, reset_s, retry_after_s))


class RateLimitPolicy:
    """The stacked limits of one rule, their mode scaling and their header values."""

    def __init__(
        self,
        name: str,
        limits: Sequence[RateLimit],
        strategy: str,
        *,
        policy_on_every_response: bool = True,
    ) -> None:
        self.name = name
        #: False: admitted responses carry RateLimit alone, and RateLimit-Policy (static, the
        #: longer line) goes with a client's first response, its first after each rotation of
        #: the client table (about once per longest period) and every refusal (`announced`);
        #: True: both on every response
        self.policy_on_every_response = policy_on_every_response
        self.base_limits = tuple(limits)
        self.strategy = strategy
        self.factor = 1.0
        self.limits: tuple[RateLimit, ...] = self.base_limits
        self.longest_period = max(limit.period for limit in self.base_limits)
        self.policy_header = b""
        self._refresh()

    def set_factor(self, factor: float, override: Sequence[RateLimit] | None = None) -> None:
        """Scale every amount by `factor` (≥ 1 request kept), or use `override` limits."""
        self.factor = factor
        if override is not None:
            self.limits = tuple(override)
        else:
            self.limits = tuple(
                RateLimit(max(1, math.floor(limit.amount * factor + _EPS)), limit.period)
                for limit in self.base_limits
            )
        self._refresh()

    def _refresh(self) -> None:
        first = self.limits[0]
        #: (period, emission interval) of the first limit, for the single-limit fast path
        self.single = (first.period, first.period / first.amount)
        interval = first.period / first.amount
        #: (interval, largest admissible `ahead`, top for `remaining`): `admit_one` (the
        #: guard's single-limit path) needs only these, precomputed: fewer float operations
        self.fast_consts = (interval, first.period + _EPS, first.period + _EPS * interval)
        self.fast = self.strategy == "gcra" and len(self.limits) == 1
        #: stacked GCRA limits: the guard admits with `MemoryRateLimiter.admit_stacked`
        self.stacked = self.strategy == "gcra" and len(self.limits) > 1
        #: which of those the guard's memory path takes: GCRA_ONE, GCRA_STACKED or 0 (neither)
        self.gcra = GCRA_ONE if self.fast else GCRA_STACKED if self.stacked else 0
        self.longest_period = max(
            max(limit.period for limit in self.limits),
            max(limit.period for limit in self.base_limits),
        )
        #: IETF draft-ietf-httpapi-ratelimit-headers: RateLimit-Policy: "name";q=10;w=1, …
        self.policy_header = ", ".join(
            f'"{_policy_item(limit)}";q={limit.amount};w={_seconds(limit.period)}'
            for limit in self.limits
        ).encode("latin-1")
        self._policy_line = (b"ratelimit-policy", self.policy_header)
        self._header_cache: dict[int, list[tuple[bytes, bytes]]] = {}
        #: (limit index, remaining, whole seconds) -> (both lines, the steady lines)
        self._lines_cache: dict[
            tuple[int, int, int],
            tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]],
        ] = {}
        #: (period, emission interval, period + ε) of each limit, for `_hit_gcra`
        self.gcra_consts = [
            (limit.period, limit.period / limit.amount, limit.period + _EPS)
            for limit in self.limits
        ]
        #: the cache key and lines headers_for_ahead returned last: a busy key's next request
        #: usually needs the same lines, found by one integer comparison
        self.last_header_key = -1
        self.last_header_lines: list[tuple[bytes, bytes]] = []
        #: the bits of `headers_for_ahead`'s key that hold the whole seconds: room for the
        #: longest `t` of the first limit, so no two (remaining, t) pairs share a key
        self._whole_bits = max(24, (int(first.period) + 2).bit_length())
        #: the decision and lines `_line_pair` returned last (-1: none yet)
        self._last_index = self._last_remaining = self._last_whole = -1
        self._last_pair: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]] = ([], [])
        self._item_prefixes = [f'"{_policy_item(limit)}";r='.encode() for limit in self.limits]

    def headers(self, decision: Decision) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit header lines for `decision`.

        Cached like `headers_for_ahead` (per limit index, remaining and whole seconds; bounded,
        emptied when the policy changes); callers must not mutate the returned list.
        """
        return self.lines_for(decision[1], decision[2], decision[3])

    def lines_for(self, index: int, remaining: int, reset: float) -> list[tuple[bytes, bytes]]:
        """`headers` of a decision naming limit `index`, `remaining` and `reset` seconds."""
        return self._line_pair(index, remaining, reset)[0]

    def steady_lines_for(
        self, index: int, remaining: int, reset: float
    ) -> list[tuple[bytes, bytes]]:
        """`lines_for` for an admitted request of a known client: RateLimit alone unless
        `policy_on_every_response` (cached; callers must not mutate the returned list)."""
        return self._line_pair(index, remaining, reset)[1]

    def _line_pair(
        self, index: int, remaining: int, reset: float
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """(both lines, the steady lines) of one decision, cached together (bounded)."""
        whole = int(reset)
        if whole < reset - _EPS:
            whole += 1
        if (
            remaining == self._last_remaining
            and whole == self._last_whole
            and index == self._last_index
        ):
            return self._last_pair  # (clients well within their limits: mostly the last one)
        key = (index, remaining, whole)
        pair = self._lines_cache.get(key)
        if pair is None:
            value = self._item_prefixes[index] + b"%d;t=%d" % (remaining, whole)
            lines = [self._policy_line, (b"ratelimit", value)]
            pair = (lines, lines if self.policy_on_every_response else lines[1:])
            if len(self._lines_cache) < 4096:
                self._lines_cache[key] = pair
        self._last_index, self._last_remaining, self._last_whole = index, remaining, whole
        self._last_pair = pair
        return pair

    def announced(self, lines: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`lines` (steady header lines) with RateLimit-Policy in front, for a client's first
        response (a new list; `lines` as it is when they already hold the policy)."""
        if self.policy_on_every_response:
            return lines
        return [self._policy_line, *lines]

    def headers_for_ahead(self, ahead: float) -> list[tuple[bytes, bytes]]:
        """Steady header lines after `MemoryRateLimiter.hit_one` admitted a request (fast
        path; `announced` adds the policy for a client's first response).

        The (remaining, reset) pairs of a busy service repeat a lot, and formatting the header
        costs more than the rate limiting itself, so finished header lines are cached (bounded,
        emptied when the policy changes). Callers must not mutate the returned list.
        """
        interval, _, top = self.fast_consts
        remaining = int((top - ahead) / interval)  # ≥ 0 for an admitted request: floor
        reset_f = ahead - _EPS
        whole = int(reset_f)  # ceil(ahead - ε)
        if whole < reset_f:
            whole += 1
        key = (remaining << self._whole_bits) + whole
        if key == self.last_header_key:  # (a busy service: mostly the same as the last one)
            return self.last_header_lines
        lines = self._header_cache.get(key)
        if lines is None:
            value = self._item_prefixes[0] + b"%d;t=%d" % (remaining, whole)
            if self.policy_on_every_response:
                lines = [self._policy_line, (b"ratelimit", value)]
            else:
                lines = [(b"ratelimit", value)]
            if len(self._header_cache) < 4096:
                self._header_cache[key] = lines
        self.last_header_key = key
        self.last_header_lines = lines
        return lines

    def describe(self) -> dict[str, object]:
        """JSON-able description for the status endpoint."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "factor": round(self.factor, 3),
            "limits": [str(limit) for limit in self.limits],
            "base_limits": [str(limit) for limit in self.base_limits],
        }


def _policy_item(limit: RateLimit) -> str:
    return f"{limit.amount}-per-{_seconds(limit.period)}s"


def _seconds(period: float) -> int | float:
    return int(period) if period == int(period) else period


class RateLimiter(Protocol):
    """What the guard asks of a rate limiter for one policy, wherever its state lives."""

    #: the policy served (its limits, mode factor and header values)
    policy: RateLimitPolicy
    #: whether `hit` returns an awaitable (the guard awaits it) rather than a Decision
    is_async: bool

    def hit(self, key: str, now: float) -> Decision | Awaitable[Decision]:
        """Count one request for `key` at monotonic time `now`; refused requests cost nothing."""
        ...

    async def decide(self, key: str, now: float) -> Decision:
        """`hit`, awaited whatever the backend: the one call that works on every limiter."""
        ...

    def rotate(self, now: float) -> None:
        """Housekeeping, about once a second: forget idle keys held in process memory."""
        ...

    def __len__(self) -> int:
        """Keys held in process memory."""
        ...


class RateLimitStorage(Protocol):
    """Where a guard's rate-limit state lives; builds the limiter of each of its policies."""

    #: "memory", "redis" or "redis-cluster"
    backend: str
    #: the storage URL, password masked
    url: str
    #: outage state shared by the limiters (None: memory never fails)
    health: Any

    def limiter(self, policy: RateLimitPolicy) -> RateLimiter:
        """The limiter of `policy` on this storage."""
        ...

    def fleet(self, modes: ModeState, on_change: Callable[[], None]) -> Any:
        """A FleetSync sharing `modes` through this storage, or None (per-process storage)."""
        ...

    async def aclose(self) -> None:
        """Close connections (idempotent)."""
        ...


class MemoryStorage:
    """Rate-limit state in this process's memory: limits hold per process."""

    backend = "memory"
    url = "memory://"
    health: Any = None

    def limiter(self, policy: RateLimitPolicy) -> MemoryRateLimiter:
        return MemoryRateLimiter(policy)

    def fleet(self, modes: ModeState, on_change: Callable[[], None]) -> Any:
        return None

    async def aclose(self) -> None:
        return None


#: URL schemes `open_storage` accepts
STORAGE_SCHEMES: tuple[str, ...] = (
    "memory://",
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
)


def open_storage(
    url: str, *, timeout_s: float = 0.25, prefix: str = "crisisctl"
) -> RateLimitStorage:
    """The storage `url` names: memory://, redis://host:port/db (also rediss://, unix://) or
    redis+cluster://host:port (a Redis Cluster; rediss+cluster:// with TLS).

    Redis round trips give up after `timeout_s` (the limiters then answer locally); every key
    lives under `prefix`. No I/O happens here: connections open on first use.
    """
    if url.startswith("memory://"):
        return MemoryStorage()
    if not url.startswith(STORAGE_SCHEMES):
        scheme = url.partition("://")[0] if "://" in url else url[:20]
        raise GuardConfigError(
            f"unknown storage scheme {scheme!r}: use memory://, redis://host:port/db "
            "or redis+cluster://host:port"
        )
    from crisisctl.guard.redis_store import RedisStorage

    return RedisStorage(url, timeout_s=timeout_s, prefix=prefix)


def _gcra_step(state: list[float], now: float, interval: float, most_ahead: float) -> float:
    """One GCRA limit's step on its theoretical arrival time `state[0]`: how far ahead of
    `now` the client is once admitted (≥ 0, the request consumed), or -1.0 when it is
    refused (`most_ahead` exceeded: nothing consumed)."""
    tat = state[0]
    if tat < now:
        tat = now
    tat += interval
    ahead = tat - now
    if ahead > most_ahead:
        return -1.0
    state[0] = tat
    return ahead


class MemoryRateLimiter:
    """In-process limiter for one policy; keys are strings (client IP by default)."""

    is_async = False

    def __init__(self, policy: RateLimitPolicy) -> None:
        self.policy = policy
        self._current: dict[str, list[float]] = {}
        self._previous: dict[str, list[float]] = {}
        self._rotated_at: float | None = None

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def rotate(self, now: float) -> None:
        """Drop keys idle for two rotations (call about once a second)."""
        if self._rotated_at is None:
            self._rotated_at = now
            return
        span = self.policy.longest_period
        if self.policy.strategy != "gcra":
            # a key last counted at the end of a window still weighs until the next one ends
            span *= 2.0
        if now - self._rotated_at >= span:
            self._previous = self._current
            self._current = {}
            self._rotated_at = now

    def _state(self, key: str, size: int) -> list[float] | None:
        state = self._current.get(key)
        if state is None:
            state = self._previous.pop(key, None)
            if state is not None and len(state) == size:
                self._current[key] = state
            else:
                state = None
        return state

    def hit(self, key: str, now: float) -> Decision:
        """Count one request for `key` at monotonic time `now` (seconds)."""
        if self.policy.strategy == "gcra":
            if len(self.policy.limits) == 1:
                return self._hit_gcra_one(key, now)
            return self._hit_gcra(key, now)
        return self._hit_window(key, now)

    async def decide(self, key: str, now: float) -> Decision:
        """`hit` as a coroutine (the `RateLimiter` call shared with the Redis limiter)."""
        return self.hit(key, now)

    def _hit_gcra_one(self, key: str, now: float) -> Decision:
        ahead = self.hit_one(key, now)
        if ahead < 0.0:
            return self._hit_gcra(key, now)
        period, interval = self.policy.single
        return _new_tuple(Decision, (True, 0, int((period - ahead) / interval + _EPS), ahead, 0.0))

    def admit_one(self, key: str, now: float) -> list[tuple[bytes, bytes]] | None:
        """`hit_one` with `RateLimitPolicy.headers_for_ahead`, for the guard's request path
        (one GCRA limit): the admitted request's header lines (with the policy for a client
        not seen since the last rotation), or None when it is refused (nothing consumed: call
        `hit` for the refusal's figures). tests/unit/test_guard_inlined.py pins it to those."""
        policy = self.policy
        state = self._current.get(key)
        if state is None:
            ahead = self.hit_one(key, now)
            return None if ahead < 0.0 else policy.announced(policy.headers_for_ahead(ahead))
        interval, most_ahead, _ = policy.fast_consts
        ahead = _gcra_step(state, now, interval, most_ahead)
        return None if ahead < 0.0 else policy.headers_for_ahead(ahead)

    def hit_one(self, key: str, now: float) -> float:
        """Fast path for a single GCRA limit: seconds until the quota is whole again if the
        request is admitted (≥ 0), or -1.0 if it is refused (then nothing was consumed)."""
        interval, most_ahead, _ = self.policy.fast_consts
        state = self._current.get(key)
        if state is None:
            state = self._state(key, 1)
            if state is None:
                self._current[key] = [now + interval]
                return interval
        return _gcra_step(state, now, interval, most_ahead)

    def _hit_gcra(self, key: str, now: float) -> Decision:
        consts = self.policy.gcra_consts
        state = self._state(key, len(consts))
        best_index = 0
        best_remaining = -1
        best_reset = 0.0
        new_tats: list[float] = []
        for i in range(len(consts)):
            period, interval, most_ahead = consts[i]
            tat = state[i] if state is not None else now
            if tat < now:
                tat = now
            new_tat = tat + interval
            ahead = new_tat - now
            if ahead > most_ahead:
                retry = tat + interval - period - now
                return decision(False, i, 0, tat - now, retry if retry > 0 else 0.0)
            remaining = int((period - ahead) / interval + _EPS)
            if best_remaining < 0 or remaining < best_remaining:
                best_index, best_remaining, best_reset = i, remaining, ahead
            new_tats.append(new_tat)
        if state is None:
            self._current[key] = new_tats
        else:
            state[:] = new_tats
        return decision(True, best_index, best_remaining, best_reset, 0.0)

    def admit_stacked(self, key: str, now: float) -> list[tuple[bytes, bytes]] | None:
        """`_hit_gcra` for the guard's request path, without building a Decision: the header
        lines of the admitted request (`RateLimitPolicy.headers` of its decision), or None
        when it is refused (nothing consumed: call `hit` for the refusal's figures).
        Keep in step with `_hit_gcra` (tests/unit/test_ratelimit.py pins the two)."""
        consts = self.policy.gcra_consts
        count = len(consts)
        state = self._current.get(key)
        first = state is None  # not seen since the last rotation: announce the policy
        if first:
            state = self._state(key, count)
        best_index = 0
        best_remaining = -1
        best_reset = 0.0
        # first every limit is judged, then (admitted) the state is updated in place: no list
        # of new TATs per request (the TATs written are the ones `_hit_gcra` computes)
        for i in range(count):
            period, interval, most_ahead = consts[i]
            tat = state[i] if state is not None else now
            if tat < now:
                tat = now
            ahead = tat + interval - now
            if ahead > most_ahead:
                return None
            remaining = int((period - ahead) / interval + _EPS)
            if best_remaining < 0 or remaining < best_remaining:
                best_index, best_remaining, best_reset = i, remaining, ahead
        if state is None:
            self._current[key] = [now + consts[i][1] for i in range(count)]
        else:
            for i in range(count):
                tat = state[i]
                if tat < now:
                    tat = now
                state[i] = tat + consts[i][1]
            if len(state) > count:  # (limits overridden to fewer: as `_hit_gcra` leaves it)
                del state[count:]
        if first:
            return self.policy.lines_for(best_index, best_remaining, best_reset)
        return self.policy.steady_lines_for(best_index, best_remaining, best_reset)

    def _hit_window(self, key: str, now: float) -> Decision:
        # state layout per limit: [window index, previous count, current count]
        limits = self.policy.limits
        state = self._state(key, 3 * len(limits))
        if state is None:
            state = [0.0] * (3 * len(limits))
            for i, limit in enumerate(limits):
                state[3 * i] = float(math.floor(now / limit.period))
            self._current[key] = state
        best_index = 0
        best_remaining = -1
        best_reset = 0.0
        for i, limit in enumerate(limits):
            period = limit.period
            window = float(math.floor(now / period))
            base = 3 * i
            if window != state[base]:
                state[base + 1] = state[base + 2] if window == state[base] + 1 else 0.0
                state[base + 2] = 0.0
                state[base] = window
            elapsed = now - window * period
            weight = 1.0 - elapsed / period
            estimate = state[base + 1] * weight + state[base + 2]
            if estimate + 1.0 > limit.amount + _EPS:
                retry = _window_retry(
                    state[base + 1], state[base + 2], limit.amount, period, elapsed
                )
                return decision(False, i, 0, period - elapsed, retry)
            remaining = int(limit.amount - estimate - 1.0 + _EPS)
            if best_remaining < 0 or remaining < best_remaining:
                best_index, best_remaining, best_reset = i, remaining, period - elapsed
        for i in range(len(limits)):
            state[3 * i + 2] += 1.0
        return decision(True, best_index, max(0, best_remaining), best_reset, 0.0)


def _window_retry(prev: float, cur: float, amount: int, period: float, elapsed: float) -> float:
    """Seconds until the sliding estimate leaves room for one more request."""
    room = amount - 1.0 - cur
    if room >= 0 and prev > 0:
        # prev * (1 - x / period) + cur <= amount - 1  ->  x >= period * (1 - room / prev)
        needed = period * (1.0 - room / prev)
        if needed <= period:
            return max(0.0, needed - elapsed)
    # wait for the next window, where the current count becomes the weighted previous one
    to_next = period - elapsed
    if cur > 0:
        needed = period * (1.0 - (amount - 1.0) / cur) if cur > amount - 1.0 else 0.0
        return to_next + max(0.0, needed)
    return to_next
