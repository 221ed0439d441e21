"""The guard's request policies (response cache, concurrency quotas) in its request path.

`PolicySet` (built by guard/policies.py when the configuration asks for a policy) holds the
cache layer's stores and the quota store, opened from the guard's storage URL (memory, or
Redis under `storage_prefix`), and one `RoutePolicy` per route rule that asks for a policy.

The guard calls a route's policy in one place, after its breaker and rate limit and before its
concurrency slot (guard/middleware.py):

    call = await route.policy.enter(scope, send)   # None: answered (a cache hit, a 429)
    ... the concurrency slot ...
    await call(scope, receive, sender)              # the app, as a cache miss, under its quota

1. the cache (guard/cache.py): a hit, a stale-while-revalidate answer or a coalesced miss is
   answered here, before any quota or concurrency slot is taken;
2. the quota (guard/quota.py), then the operation quota the rule names with ``quota=``
   (guard/operations.py): over either, the answer is 429 + Retry-After, or a stale-if-error
   entry of the cache when the route has one; an admitted operation slot is left in the
   scope for the app, which may keep it for the background work it starts;
3. the returned `PolicyCall` runs the app as the cache's origin call (captured, stored,
   single-flight) and gives the quota slots, the cache's flight and the operation slot (unless
   the app adopted it) back when it ends, however it ends. A request the guard refuses after
   `enter` (shed by the concurrency limit) gives them back through `refused`, which also
   serves a stale entry instead of the refusal when the cache has one (as for an open breaker
   or emergency shedding).

Emergency mode tightens the quotas (guard/quota.py) and widens the cache's windows by each
rule's `emergency_ttl_factor`. The background refresh of a stale-while-revalidate entry calls
the app directly, holding a slot of the route's concurrency limit (not started when none is
free).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crisisctl.guard import control
from crisisctl.guard.cache import CacheLayer, Miss
from crisisctl.guard.cache_store import MemoryStore, RedisStore
from crisisctl.guard.config import GuardConfig, RouteRule
from crisisctl.guard.modes import EMERGENCY, ModeState
from crisisctl.guard.operations import (
    OPERATION_SCOPE_KEY,
    Operation,
    OperationCounter,
    OperationRefused,
    Operations,
    operation_refusal_body,
)
from crisisctl.guard.quota import (
    CLIENT_SCOPE_KEY,
    Admission,
    QuotaPolicy,
    QuotaRefusal,
    QuotaRule,
    refusal_body,
)
from crisisctl.guard.quota_store import MemoryQuotaStore, QuotaStore, open_quota_store
from crisisctl.guard.tiers import TierTable
from crisisctl.guard.types import ASGIApp, Receive, Scope, Send

#: metric outcome -> RouteCacheStats field
_CACHE_COUNTS = {
    "hit": "hits",
    "stale": "stale",
    "miss": "misses",
    "bypassed": "bypassed",
    "coalesced": "coalesced",
}

__all__ = ["PolicyCall", "PolicySet", "RoutePolicy", "has_quota"]


def has_quota(rule: RouteRule) -> bool:
    """Whether `rule` sets a concurrency quota."""
    return rule.max_concurrent is not None or rule.max_concurrent_per_key is not None


class PolicySet:
    """The cache layer and the quota policy of one guard, and each rule's `RoutePolicy`."""

    def __init__(
        self, config: GuardConfig, app: ASGIApp, modes: ModeState, tiers: TierTable
    ) -> None:
        self.modes = modes
        self.tiers = tiers
        url = config.storage
        shared = not url.startswith("memory://")

        def emergency() -> bool:
            return modes.mode == EMERGENCY

        redis: RedisStore | None = None
        if shared and any(r.cache is not None and r.cache.store == "redis" for r in config.routes):
            redis = RedisStore.from_url(
                url, prefix=config.storage_prefix, timeout_s=config.storage_timeout_s
            )
        self.cache = CacheLayer(
            app, config.routes, memory=MemoryStore(), redis=redis, emergency=emergency
        )
        store: QuotaStore = MemoryQuotaStore()
        if config.operations or any(has_quota(rule) for rule in config.routes):
            store = open_quota_store(
                url,
                lease_s=config.quota_lease_s,
                prefix=config.storage_prefix,
                timeout_s=config.storage_timeout_s,
            )
        self.quota = QuotaPolicy(
            config.routes,
            store,
            tiers=tiers,
            emergency=emergency,
            emergency_factor=config.emergency.concurrency_factor,
        )
        #: the operation quotas (guard/operations.py), on the same store; None: none
        self.operations: Operations | None = None
        if config.operations:
            self.operations = Operations(
                config.operations,
                store,
                emergency=emergency,
                emergency_factor=config.emergency.concurrency_factor,
            )
        self._by_rule: dict[int, RoutePolicy] = {}
        for rule in config.routes:
            quota_rule = self.quota.by_route.get(rule)
            operation = None
            if rule.quota is not None and self.operations is not None:
                operation = self.operations.counter(rule.quota)
            if rule.cache is not None or quota_rule is not None or operation is not None:
                self._by_rule[id(rule)] = RoutePolicy(self, rule, quota_rule, operation)

    def for_rule(self, rule: RouteRule | None, route: Any = None) -> RoutePolicy | None:
        """The policy of a route whose first matching rule is `rule` (None: none); given the
        guard's `RouteRuntime`, a copy bound to it (its request counters count the quotas'
        refusals)."""
        policy = None if rule is None else self._by_rule.get(id(rule))
        return policy if policy is None or route is None else policy.bound(route)

    def drop_expired(self) -> int:
        """Memory-budget cleanup hook: drop the in-process cache's expired entries (the ones no
        request met since they expired); how many went."""
        return self.cache.memory.drop_expired(self.cache.clock())

    def add_memory_hooks(self, memory: Any) -> None:
        """Register `drop_expired` with the guard's memory budget (`MemoryBudget`), once."""
        if self.drop_expired not in memory.hooks:
            memory.on_pressure(self.drop_expired)

    async def invalidate(self, prefix: str) -> int:
        """Drop the cache entries whose key starts with `prefix`; how many went."""
        return await self.cache.invalidate(prefix)

    def describe(self) -> dict[str, object]:
        """The status document's ``policies`` member."""
        return {
            "cache": self.cache.describe(),
            "quotas": self.quota.describe(),
            "tiers": {
                "default": self.tiers.default_tier,
                "configured": sorted(self.tiers.tiers),
                "seen": dict(self.tiers.seen),
            },
            "operations": self.operations.describe() if self.operations is not None else None,
        }

    def metrics(self) -> Iterator[Metric]:
        """Prometheus families: bounded by configuration (labels: the rule's route template,
        a configured tier, an outcome from a fixed set)."""
        cache = CounterMetricFamily(
            "crisisctl_guard_cache_requests",
            "Cacheable requests per route and outcome (hit, stale, miss, bypassed, coalesced).",
            labels=["route", "outcome"],
        )
        served = CounterMetricFamily(
            "crisisctl_guard_cache_served_bytes",
            "Body bytes answered from the cache.",
            labels=["route"],
        )
        stored = CounterMetricFamily(
            "crisisctl_guard_cache_stored_bytes",
            "Body bytes stored in the cache.",
            labels=["route"],
        )
        for label, st in list(self.cache.stats.items()):
            for outcome in ("hit", "stale", "miss", "bypassed", "coalesced"):
                cache.add_metric([label, outcome], getattr(st, _CACHE_COUNTS[outcome]))
            served.add_metric([label], st.bytes_served)
            stored.add_metric([label], st.bytes_stored)
        memory = GaugeMetricFamily(
            "crisisctl_guard_cache_memory_bytes", "Bytes held by the in-process cache store."
        )
        memory.add_metric([], self.cache.memory.bytes)
        yield cache
        yield served
        yield stored
        yield memory
        in_flight = GaugeMetricFamily(
            "crisisctl_guard_quota_in_flight",
            "Requests holding a quota slot of the route in this instance.",
            labels=["route"],
        )
        limit = GaugeMetricFamily(
            "crisisctl_guard_quota_limit",
            "Concurrency quota of the route in force (over every instance sharing the storage).",
            labels=["route"],
        )
        refused = CounterMetricFamily(
            "crisisctl_guard_quota_requests",
            "Requests of a quota route per outcome (admitted, quota, quota_per_key).",
            labels=["route", "outcome"],
        )
        emergency = self.quota.emergency()
        for rule in self.quota.rules:
            if not rule.has_quota:
                continue
            in_flight.add_metric([rule.label], rule.in_flight)
            route_limit, _ = self.quota.limits(rule, self.tiers.default_tier, emergency)
            if route_limit is not None:
                limit.add_metric([rule.label], route_limit)
            refused.add_metric([rule.label, "admitted"], rule.admitted)
            for reason, count in rule.refused.items():
                refused.add_metric([rule.label, reason], count)
        yield in_flight
        yield limit
        yield refused
        tiers = CounterMetricFamily(
            "crisisctl_guard_tier_requests",
            "Requests identified per client tier (configured tiers only).",
            labels=["tier"],
        )
        for tier, count in list(self.tiers.seen.items()):
            tiers.add_metric([tier], count)
        yield tiers
        if self.operations is not None:
            yield from self.operations.metrics()

    async def aclose(self) -> None:
        """Stop the cache's background refreshes, close the stores' Redis clients."""
        await self.cache.aclose()
        if self.operations is not None:
            await self.operations.aclose()
        await self.quota.store.aclose()
        if self.cache.redis is not None:
            await self.cache.redis.aclose()


class RoutePolicy:
    """One route rule's cache, quota and operation quota, called by the guard's request path."""

    __slots__ = ("cache", "operation", "policies", "quota_rule", "route", "rule")

    def __init__(
        self,
        policies: PolicySet,
        rule: RouteRule,
        quota_rule: QuotaRule | None,
        operation: OperationCounter | None = None,
    ) -> None:
        self.policies = policies
        self.rule = rule
        self.cache = rule.cache is not None
        self.quota_rule = quota_rule
        self.operation = operation
        #: the guard's route this copy serves (`bound`), None for the rule's own
        self.route: Any = None

    def bound(self, route: Any) -> RoutePolicy:
        """This rule's policy for one of the guard's routes (a `RouteRuntime`): its request
        counters count a quota's 429 as they count the guard's other refusals (reason
        ``quota``, ``quota_per_key``, ``operation_quota`` or ``operation_quota_per_key`` in
        ``crisisctl_guard_rejected_total``)."""
        policy = RoutePolicy(self.policies, self.rule, self.quota_rule, self.operation)
        policy.route = route
        return policy

    async def enter(self, scope: Scope, send: Send) -> PolicyCall | None:
        """The policies before the concurrency slot: None when the request was answered."""
        policies = self.policies
        miss: Miss | None = None
        if self.cache:
            route = self.route  # a background refresh holds a slot of its concurrency limit
            miss = await policies.cache.begin(scope, send, route.conc if route else None)
            if miss is None:
                return None
        call = PolicyCall(policies, miss, None)
        try:
            refusal = await self._admit(scope, call)
        except BaseException:
            await call.release()
            raise
        if refusal is None:
            return call
        await call.release()
        if not (self.cache and await policies.cache.serve_stale(scope, send)):
            if isinstance(refusal, QuotaRefusal):
                body, reason = refusal_body(refusal), refusal.reason
            else:
                body, reason = operation_refusal_body(refusal), "operation_" + refusal.reason
            route = self.route
            if route is not None:
                route.stats.reject(reason)
                route.counts[4] += 1
            retry = refusal.retry_after_s
            await control.send_body(send, 429, body, b"application/json", retry_after=retry)
        return None

    async def _admit(
        self, scope: Scope, call: PolicyCall
    ) -> QuotaRefusal | OperationRefused | None:
        """Take the route quota's and the operation quota's slots into `call`, or the refusal."""
        policies = self.policies
        rule = self.quota_rule
        counter = self.operation
        if rule is None and counter is None:
            return None
        identity = policies.tiers.identify(scope)
        if rule is not None:
            decision = await policies.quota.admit_rule(rule, identity)
            if decision is not None:
                scope[CLIENT_SCOPE_KEY] = decision.identity
            if isinstance(decision, QuotaRefusal):
                return decision
            call.admission = decision
        if counter is not None and policies.operations is not None:
            got = await policies.operations.admit(counter, identity.key)
            if isinstance(got, OperationRefused):
                return got
            call.operation = got
            scope[OPERATION_SCOPE_KEY] = got
        return None

    async def refused(self, scope: Scope | None, send: Send, call: Any = None) -> bool:
        """The guard refuses the request (breaker open, shed): give back what `enter` took,
        and answer from the cache instead when it holds a usable entry (True: answered)."""
        if isinstance(call, PolicyCall):
            await call.release()
        if scope is None or not self.cache:
            return False
        return await self.policies.cache.serve_stale(scope, send)


class PolicyCall:
    """The app's call for one admitted request: the cache's origin call under its quotas."""

    __slots__ = ("admission", "miss", "operation", "policies")

    def __init__(self, policies: PolicySet, miss: Miss | None, admission: Admission | None):
        self.policies = policies
        self.miss = miss
        self.admission = admission
        #: the operation-quota slot taken at admission (released at the end unless adopted)
        self.operation: Operation | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cache = self.policies.cache
        try:
            if self.miss is not None:
                await cache.fetch(self.miss, cache.app, scope, receive, send)
            else:
                await cache.app(scope, receive, send)
        except BaseException:
            # shielded: a cancelled request (client gone, timeout) still gives its slots back
            await asyncio.shield(self.release())
            raise
        await self.release()  # (not shielded here: a shield costs a task per request)

    async def release(self) -> None:
        """Give the quota slots and the cache's flight back (once); an operation slot the app
        adopted stays held."""
        miss, self.miss = self.miss, None
        admission, self.admission = self.admission, None
        operation, self.operation = self.operation, None
        try:
            if miss is not None:
                await self.policies.cache.end(miss)
        finally:
            try:
                if admission is not None:
                    await self.policies.quota.finish(admission)
            finally:
                if operation is not None:
                    await operation.end_of_request()
