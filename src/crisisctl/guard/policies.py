"""Where the guard's request policies (cache, quotas, tiers) plug into it; imports stay light.

`attach(routes, app, modes, key_func)` reads the configuration once, when the guard
is built. With client `tiers` it hands the route builder the `TierTable` (rate limits become
per tier, guard/tier_limits.py) and returns the key function the guard should use instead
(`tier_limits.tiered_key`: a key and a tier per request, never an exception). When a route rule
has a `cache` section or a quota, or the guard has operation quotas, it builds the `PolicySet`
(guard/policy_set.py, imported only then: it pulls in the cache and the Redis client) and
gives the route builder its
`for_rule`, so each route's `policy` is resolved once, when the route is built. A guard with
no policy configured has every route's `policy` None: the request path tests one attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crisisctl.guard.config import RouteRule
from crisisctl.guard.modes import ModeState
from crisisctl.guard.tiers import TierTable
from crisisctl.guard.types import ASGIApp, Scope

if TYPE_CHECKING:
    from crisisctl.guard.policy_set import PolicySet
    from crisisctl.guard.routebuild import RouteBuilder

__all__ = ["attach", "wants_policies"]


def wants_policies(rule: RouteRule) -> bool:
    """Whether a route rule asks for a request policy (a cache, a concurrency quota or an
    operation quota)."""
    return (
        rule.cache is not None
        or rule.max_concurrent is not None
        or rule.max_concurrent_per_key is not None
        or rule.quota is not None
    )


def attach(
    routes: RouteBuilder,
    app: ASGIApp,
    modes: ModeState,
    key_func: Callable[[Scope], Any],
) -> tuple[PolicySet | None, Callable[[Scope], Any]]:
    """Wire the configured policies into `routes`; (the policy set or None, the key function
    the guard's rate limits use)."""
    config = routes.config
    tiers = TierTable(config.tiers, config.default_tier, key_func=key_func)
    if config.tiers:
        from crisisctl.guard.tier_limits import tiered_key

        routes.tiers = tiers
        key_func = tiered_key(tiers)
    if not config.operations and not any(wants_policies(rule) for rule in config.routes):
        return None, key_func
    from crisisctl.guard.policy_set import PolicySet

    policy_set = PolicySet(config, app, modes, tiers)
    routes.policy_for = policy_set.for_rule
    return policy_set, key_func
