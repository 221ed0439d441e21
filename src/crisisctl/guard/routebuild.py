"""Route building: what the request path reads about a route, built once per (label, rule,
method, critical) and reused.

The request path (guard/middleware.py) finds a request's route in a per-(method, path) cache
of static paths (guard/routes.py: a path with parameters is not kept); on a miss it asks
`RouteBuilder.route_for`, which resolves the path (guard/routes.py: label, rule, whether the
raw path is critical) and builds, or reuses, the route's runtime object:

* its stats (one `RouteStats` per label) and its counts for the method;
* its priority (a critical path is always critical) and its timeout;
* its circuit breaker, one per label — none for critical routes, none for the aggregate labels
  ``<unmatched>`` and ``<other>`` (one failing path would break every path folded into them);
* its rate limiter, one per rule (and one for the guard-wide default) — none for a critical
  path, whatever rule matches it;
* with client tiers, a `TieredLimiter` (guard/tier_limits.py) instead: one limiter per tier,
  the tier's `rate_limit` or the route's;
* its request policies (guard/policies.py: cache, quotas), one per rule, when it has any;
* its concurrency limiter — none for a critical route; the guard's own with the concurrency
  scope ``"service"``, the label's own (under the guard-wide ceiling) with ``"route"``.

The dicts it fills (`route_stats`, `breakers`, `policies`, `limiters`, `overrides`) are the
guard's own: the guard shares them, so modes and housekeeping see every policy built here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crisisctl.guard.breaker import CircuitBreaker
from crisisctl.guard.concurrency import ConcurrencyLimiter
from crisisctl.guard.config import GuardConfig, Priority, RateLimit, RouteRule, parse_limits
from crisisctl.guard.metrics import RouteStats
from crisisctl.guard.ratelimit import MemoryRateLimiter, RateLimitPolicy, RateLimitStorage
from crisisctl.guard.routes import OTHER, UNMATCHED, Resolved, RouteTable, discover_templates

if TYPE_CHECKING:
    from crisisctl.guard.runtime import RouteRuntime


class RouteBuilder:
    """Resolves and builds the guard's routes (see the module docstring)."""

    def __init__(
        self,
        config: GuardConfig,
        app: Any,
        new_route: Callable[[], RouteRuntime],
        on_new_policy: Callable[[], None],
        storage: RateLimitStorage,
        concurrency: ConcurrencyLimiter | None = None,
    ) -> None:
        self.config = config
        #: the guard's concurrency limiter (scope "route": the guard-wide ceiling)
        self.concurrency = concurrency
        self._app = app
        self._new_route = new_route
        #: called after a rate-limit policy is built (the guard applies its mode to it)
        self._on_new_policy = on_new_policy
        self.route_stats: dict[str, RouteStats] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.policies: dict[int, RateLimitPolicy] = {}
        self.limiters: dict[int, Any] = {}
        self.overrides: dict[int, tuple[RateLimit, ...]] = {}
        #: where rate-limit state lives (ratelimit.open_storage: memory, Redis or a cluster)
        self._storage = storage
        #: (method -> path -> route): what the request path looks up first
        self.cache: dict[str, dict[str, RouteRuntime]] = {}
        self._runtimes: dict[tuple[str, int, str, bool], RouteRuntime] = {}
        self._table: RouteTable[RouteRuntime] | None = None
        self._default_rule = RouteRule(pattern="/", rate_limit=config.rate_limit)
        #: the guard's tiers (guard/tiers.py) when it has any: rate limits become per tier
        self.tiers: Any = None
        #: (rule, route) -> the route's request policies (guard/policies.py), when the guard
        #: has any
        self.policy_for: Callable[[RouteRule | None, RouteRuntime], Any] | None = None

    def route_for(self, method: str, path: str, *, probed: bool = False) -> RouteRuntime:
        """The route of one request (discovering the app's routes on the first call); `probed`:
        the caller found nothing in `cache` under `method` (see `RouteTable.lookup`)."""
        if self._table is None:
            cfg = self.config
            templates = discover_templates(self._app) if cfg.discover_routes else []
            self._table = RouteTable(
                cfg.routes,
                templates,
                self._build,
                max_labels=cfg.max_route_labels,
                critical_paths=cfg.critical_paths,
            )
        route = self._table.lookup(method, path, probed=probed)
        self.cache = self._table.cache
        return route

    def _build(self, resolved: Resolved, method: str) -> RouteRuntime:
        rule = resolved.rule
        label = resolved.label
        critical_path = resolved.critical
        rule_key = id(rule) if rule is not None else 0
        runtime_key = (label, rule_key, method, critical_path)
        existing = self._runtimes.get(runtime_key)
        if existing is not None:
            return existing
        cfg = self.config
        route = self._new_route()
        route.label = label
        stats = self.route_stats.get(label)
        if stats is None:
            stats = self.route_stats[label] = RouteStats(label)
        route.stats = stats
        route.counts = stats.counts_for(method)
        priority = Priority.parse(rule.priority if rule is not None else Priority.NORMAL)
        if critical_path:
            priority = Priority.CRITICAL
        route.priority = int(priority)
        route.critical = route.priority >= Priority.CRITICAL
        route.timeout_s = (rule.timeout_s if rule is not None else None) or cfg.timeout_s
        if (
            cfg.breaker.enabled
            and (rule is None or rule.breaker)
            and not route.critical
            and label not in (UNMATCHED, OTHER)
        ):
            breaker = self.breakers.get(label)
            if breaker is None:
                breaker = self.breakers[label] = CircuitBreaker(cfg.breaker)
            route.breaker = breaker
            route.slow_s = cfg.breaker.slow_call_s
        if critical_path:
            pass  # health checks are never rate limited, whatever rule matches them
        elif rule is not None and rule.rate_limit:
            route.limiter = self._limiter(rule_key, rule, rule.rate_limit)
        elif not route.critical and cfg.rate_limit:
            route.limiter = self._limiter(0, self._default_rule, cfg.rate_limit)
        elif not route.critical and any(tier.rate_limit for tier in cfg.tiers):
            route.limiter = self._limiter(0, self._default_rule, "")
        if self.policy_for is not None and not critical_path:
            route.policy = self.policy_for(rule, route)
        if isinstance(route.limiter, MemoryRateLimiter):
            route.mem_limiter = route.limiter
        conc = self.concurrency
        if conc is not None and not route.critical:
            route.conc = conc.child(label) if conc.ceiling_only else conc
        self._runtimes[runtime_key] = route
        return route

    def _limiter(self, rule_key: int, rule: RouteRule, text: str) -> Any:
        limiter = self.limiters.get(rule_key)
        if limiter is not None:
            return limiter
        # the name keys the shared (Redis) state: it must not depend on the order in which
        # this instance met its routes, only on the configuration all instances share
        index = next((i for i, r in enumerate(self.config.routes) if r is rule), -1)
        name = "default" if rule_key == 0 else f"rule{index}:{rule.pattern}"
        tiers = self.tiers
        if tiers is None:
            limiter = self._policy_limiter(rule_key, name, rule, text)
        else:
            from crisisctl.guard.tier_limits import TieredLimiter

            by_tier: dict[str, Any] = {}
            for tier in (tiers.default_tier, *tiers.tiers):
                tier_text = tiers.rate_limit(tier, text or None)
                by_tier[tier] = None
                if tier_text:
                    key, tier_name = hash((rule_key, tier)), f"{name}:tier:{tier}"
                    own = tier_text == text
                    by_tier[tier] = self._policy_limiter(key, tier_name, rule, tier_text, own)
            limiter = TieredLimiter(by_tier, tiers.default_tier)
        self.limiters[rule_key] = limiter
        return limiter

    def _policy_limiter(
        self, key: int, name: str, rule: RouteRule, text: str, own: bool = True
    ) -> Any:
        policy = RateLimitPolicy(
            name,
            parse_limits(text),
            rule.strategy or self.config.strategy,
            policy_on_every_response=self.config.rate_limit_policy_header == "always",
        )
        if rule.emergency_rate_limit and own:
            self.overrides[key] = parse_limits(rule.emergency_rate_limit)
        self.policies[key] = policy
        limiter = self._storage.limiter(policy)
        self._on_new_policy()
        return limiter
