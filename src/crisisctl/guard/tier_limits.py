"""Rate limits per client tier: one route's limiter that picks the request's tier's limit.

When the guard has `tiers`, its key function is `tiered_key(tiers)`: `TierTable.identify`
(guard/tiers.py) gives each request a key and a tier, never an exception (a key function that
raises puts the request under its peer address in the default tier and logs why, at most once
a minute per reason), passed on as one string: the tier, U+001F, the key (the guard's request
path types its keys as strings; a tier name never holds U+001F). Every rate-limited route then
gets a `TieredLimiter`: one inner limiter per tier (memory or Redis, like any other policy,
named ``<policy>:tier:<tier>`` so instances sharing Redis share each tier's counters), whose
limit is the tier's `rate_limit` when set, else the route's (or the guard-wide one); a tier
with neither is not limited on the route.

The guard's request path calls limiters through the generic `RateLimiter` interface (`hit`,
then `policy` for the refusal and the RateLimit headers). `policy` is the policy of the
request's tier: `hit` sets it in a context variable, read in the same task right after.
Tiered routes leave the guard's memory fast path (`MemoryRateLimiter.admit_one` and
`admit_stacked`): one more dict lookup and a coroutine per request.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from crisisctl.guard.ratelimit import Decision, RateLimiter, RateLimitPolicy
from crisisctl.guard.tiers import ClientIdentity, TierTable
from crisisctl.guard.types import Scope

__all__ = ["UNLIMITED", "TieredLimiter", "tiered_key"]

#: between the tier and the key in a tiered key string
SEP = "\x1f"


def tiered_key(tiers: TierTable) -> Callable[[Scope], str]:
    """The guard's key function with tiers: ``TIER + SEP + KEY`` for each request."""
    identify = tiers.identify

    def key(scope: Scope) -> str:
        identity = identify(scope)
        return identity.tier + SEP + identity.key

    return key


class _Unlimited:
    """The `policy` of a tier without a limit on a route: no refusals, no headers."""

    name = "unlimited"

    def headers(self, decision: Decision) -> list[tuple[bytes, bytes]] | None:
        return None


UNLIMITED = _Unlimited()
_ALLOWED = Decision(True, 0, 0, 0.0, 0.0)
_current: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "crisisctl_tier_policy", default=UNLIMITED
)


class TieredLimiter:
    """One route's rate limit, looked up per request by the request's tier."""

    is_async = True

    def __init__(
        self,
        by_tier: dict[str, RateLimiter | None],
        default_tier: str,
    ) -> None:
        self.by_tier = by_tier
        self.default_tier = default_tier
        self._default = by_tier.get(default_tier)

    @property
    def policy(self) -> Any:
        """The policy of the tier of the request that last called `hit` in this task."""
        return _current.get()

    def limiter_for(self, tier: str) -> RateLimiter | None:
        """The inner limiter of `tier` (the default tier's for an unknown one)."""
        return self.by_tier.get(tier, self._default)

    async def hit(self, identity: Any, now: float) -> Decision:
        """Count one request of `identity` (a `tiered_key` string or a `ClientIdentity`; a key
        without a tier is the default tier's) against its tier's limit."""
        if isinstance(identity, ClientIdentity):
            key, tier = identity.key, identity.tier
        else:
            tier, sep, key = str(identity).partition(SEP)
            if not sep:
                key, tier = tier, self.default_tier
        limiter = self.by_tier.get(tier, self._default)
        if limiter is None:
            _current.set(UNLIMITED)
            return _ALLOWED
        policy: RateLimitPolicy = limiter.policy
        _current.set(policy)
        return await limiter.decide(key, now)

    async def decide(self, identity: Any, now: float) -> Decision:
        return await self.hit(identity, now)

    def rotate(self, now: float) -> None:
        for limiter in self.by_tier.values():
            if limiter is not None:
                limiter.rotate(now)

    def __len__(self) -> int:
        return sum(len(limiter) for limiter in self.by_tier.values() if limiter is not None)
