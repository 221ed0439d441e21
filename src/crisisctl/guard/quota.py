"""Concurrency quotas: at most N requests of a route in flight, and at most M per client key.

A route rule with ``max_concurrent=2`` lets two ``POST /api/scans`` run at once over every
instance sharing the store; ``max_concurrent_per_key=1`` lets each client key (its tier may set
its own number, guard/tiers.py) run one. A request over a quota is answered at once with 429
and a ``Retry-After`` derived from the route's observed service time: an exponentially
weighted mean of the durations of its admitted requests, rounded up, at least 1 s (1 s before
the first one ends). Nothing waits in a queue: a quota guards expensive work, and the client
is told when a slot is likely to be free.

In emergency mode the quotas tighten: a rule's ``emergency_max_concurrent[_per_key]``, else the
normal value times the emergency ``concurrency_factor`` (at least 1).

`QuotaPolicy` is the decision (`admit` -> `Admission` | `QuotaRefusal` | None, then `finish`),
usable from any request path; `QuotaLayer(app, rules, store)` is a pure-ASGI wrapper around it
that works on its own. Slots are taken from a `QuotaStore` (guard/quota_store.py): memory for
one instance, Redis leases shared by every instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crisisctl.guard import control
from crisisctl.guard.config import RouteRule
from crisisctl.guard.quota_store import Lease, QuotaStore, Refused
from crisisctl.guard.routes import compile_template
from crisisctl.guard.tiers import ClientIdentity, TierTable, tightened
from crisisctl.guard.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "Admission",
    "QuotaLayer",
    "QuotaPolicy",
    "QuotaRefusal",
    "QuotaRule",
    "ServiceTime",
    "quota_rules",
]

#: the scope entry where the layer leaves the request's `ClientIdentity`
CLIENT_SCOPE_KEY = "crisisctl.client"
#: counter name of the route-wide quota; per-key counters are "k:" + key
ROUTE_COUNTER = "all"
#: client keys longer than this are stored as a digest (Redis key names stay short)
_MAX_KEY_CHARS = 128
REFUSAL_MESSAGES = {
    "quota": "this route is at its limit of concurrent requests; retry after the Retry-After delay",
    "quota_per_key": "you have as many requests of this route in flight as your quota allows; "
    "retry after the Retry-After delay",
}


class ServiceTime:
    """The observed service time of one route: an exponentially weighted mean of durations."""

    def __init__(self, alpha: float = 0.2, initial_s: float = 1.0, max_s: float = 300.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.initial_s = initial_s
        self.max_s = max_s
        self.mean_s: float | None = None
        self.samples = 0

    def observe(self, seconds: float) -> None:
        """Fold in the duration of one admitted request (negative or NaN ones are ignored)."""
        if not seconds >= 0.0:
            return
        seconds = min(seconds, self.max_s)
        self.samples += 1
        if self.mean_s is None:
            self.mean_s = seconds
        else:
            self.mean_s += self.alpha * (seconds - self.mean_s)

    def retry_after_s(self) -> int:
        """Whole seconds a refused client should wait: the mean rounded up, in [1, max_s]."""
        mean = self.mean_s if self.mean_s is not None else self.initial_s
        return max(1, min(math.ceil(self.max_s), math.ceil(mean - 1e-9)))


@dataclass(slots=True)
class QuotaRule:
    """A route rule's quota fields, its matcher, and what it saw."""

    label: str
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    max_concurrent: int | None
    max_concurrent_per_key: int | None
    emergency_max_concurrent: int | None
    emergency_max_concurrent_per_key: int | None
    service: ServiceTime = field(default_factory=ServiceTime)
    admitted: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"quota": 0, "quota_per_key": 0})
    in_flight: int = 0

    @property
    def has_quota(self) -> bool:
        return self.max_concurrent is not None or self.max_concurrent_per_key is not None

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.regex.match(path) is not None


def quota_rules(routes: Sequence[RouteRule]) -> list[QuotaRule]:
    """One `QuotaRule` per route rule, in order (the first matching rule decides, as in the
    guard: a request whose first matching rule sets no quota has none)."""
    rules = []
    for rule in routes:
        methods = frozenset(rule.methods) if rule.methods is not None else None
        label = rule.pattern if methods is None else " ".join([*sorted(methods), rule.pattern])
        rules.append(
            QuotaRule(
                label=label,
                regex=compile_template(rule.pattern),
                methods=methods,
                max_concurrent=rule.max_concurrent,
                max_concurrent_per_key=rule.max_concurrent_per_key,
                emergency_max_concurrent=rule.emergency_max_concurrent,
                emergency_max_concurrent_per_key=rule.emergency_max_concurrent_per_key,
            )
        )
    return rules


@dataclass(frozen=True, slots=True)
class Admission:
    """A request holding quota slots until `QuotaPolicy.finish`."""

    rule: QuotaRule
    lease: Lease
    identity: ClientIdentity
    started: float


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """A request over a quota: answer 429 with `retry_after_s`."""

    rule: QuotaRule
    reason: str  # "quota" (the route's) or "quota_per_key"
    retry_after_s: int
    identity: ClientIdentity
    held: int
    status: int = 429


def counter_name(key: str) -> str:
    """The per-key counter of `key` (a digest when the key is long)."""
    if len(key) > _MAX_KEY_CHARS:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "k:" + key


class QuotaPolicy:
    """The quota decision for a request, and the bookkeeping once it ends."""

    def __init__(
        self,
        routes: Sequence[RouteRule],
        store: QuotaStore,
        *,
        tiers: TierTable | None = None,
        emergency: Callable[[], bool] = lambda: False,
        emergency_factor: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = quota_rules(routes)
        #: the guard's own route rule -> its quota rule (rules without a quota are absent)
        self.by_route: dict[RouteRule, QuotaRule] = {
            route: rule for route, rule in zip(routes, self.rules, strict=True) if rule.has_quota
        }
        self.store = store
        self.tiers = tiers if tiers is not None else TierTable()
        self.emergency = emergency
        self.emergency_factor = emergency_factor
        self._clock = clock

    def rule_for(self, method: str, path: str) -> QuotaRule | None:
        """The first rule matching the request, if it sets a quota."""
        for rule in self.rules:
            if rule.matches(method, path):
                return rule if rule.has_quota else None
        return None

    def limits(self, rule: QuotaRule, tier: str, emergency: bool) -> tuple[int | None, int | None]:
        """(route quota, per-key quota) of a request of `tier` under `rule` now."""
        route = rule.max_concurrent
        if emergency:
            route = (
                rule.emergency_max_concurrent
                if rule.emergency_max_concurrent is not None
                else tightened(route, self.emergency_factor)
            )
        per_key = self.tiers.max_concurrent_per_key(
            tier,
            rule.max_concurrent_per_key,
            emergency=emergency,
            emergency_rule_value=rule.emergency_max_concurrent_per_key,
            emergency_factor=self.emergency_factor,
        )
        return route, per_key

    async def admit(
        self, scope: Scope, identity: ClientIdentity | None = None
    ) -> Admission | QuotaRefusal | None:
        """Take the request's slots; None when no quota applies to it.

        `identity`: the request's key and tier when the caller has them already (the guard
        computes them for its rate limits); else `tiers.identify(scope)`.
        """
        rule = self.rule_for(scope.get("method", "GET"), scope.get("path", "/"))
        if rule is None:
            return None
        if identity is None:
            identity = self.tiers.identify(scope)
        return await self.admit_rule(rule, identity)

    async def admit_rule(
        self, rule: QuotaRule, identity: ClientIdentity
    ) -> Admission | QuotaRefusal | None:
        """`admit` for a request whose rule the caller matched already (see `by_route`)."""
        route_limit, key_limit = self.limits(rule, identity.tier, self.emergency())
        slots: list[tuple[str, int]] = []
        if route_limit is not None:
            slots.append((ROUTE_COUNTER, route_limit))
        if key_limit is not None:
            slots.append((counter_name(identity.key), key_limit))
        if not slots:
            return None
        got = await self.store.acquire(rule.label, slots)
        if isinstance(got, Refused):
            reason = "quota" if got.name == ROUTE_COUNTER else "quota_per_key"
            rule.refused[reason] += 1
            return QuotaRefusal(rule, reason, rule.service.retry_after_s(), identity, got.held)
        rule.admitted += 1
        rule.in_flight += 1
        return Admission(rule, got, identity, self._clock())

    async def finish(self, admission: Admission) -> None:
        """Give the slots back and fold the request's duration into the service time."""
        rule = admission.rule
        rule.in_flight -= 1
        rule.service.observe(self._clock() - admission.started)
        await self.store.release(admission.lease)

    def describe(self) -> dict[str, object]:
        """JSON-able state for the status endpoint."""
        emergency = self.emergency()
        routes = {}
        for rule in self.rules:
            if not rule.has_quota:
                continue
            route_limit, key_limit = self.limits(rule, self.tiers.default_tier, emergency)
            routes[rule.label] = {
                "max_concurrent": route_limit,
                "max_concurrent_per_key": key_limit,
                "in_flight_here": rule.in_flight,
                "admitted_total": rule.admitted,
                "refused_total": dict(rule.refused),
                "service_time_s": rule.service.mean_s,
                "retry_after_s": rule.service.retry_after_s(),
            }
        return {"emergency": emergency, "routes": routes, "store": self.store.describe()}


def refusal_body(refusal: QuotaRefusal) -> bytes:
    """The JSON body of a 429 for `refusal`."""
    return json.dumps(
        {
            "error": REFUSAL_MESSAGES[refusal.reason],
            "reason": refusal.reason,
            "route": refusal.rule.label,
            "retry_after_s": refusal.retry_after_s,
        },
        separators=(",", ":"),
    ).encode()


class QuotaLayer:
    """Pure-ASGI concurrency quotas around `app` (HTTP only; other scopes pass through).

        app = QuotaLayer(app, [RouteRule("/api/scans", methods=("POST",), max_concurrent=2)],
                         MemoryQuotaStore())

    The request's `ClientIdentity` is left in ``scope["crisisctl.client"]`` for the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[RouteRule] | QuotaPolicy,
        store: QuotaStore | None = None,
        *,
        tiers: TierTable | None = None,
        emergency: Callable[[], bool] = lambda: False,
        emergency_factor: float = 0.5,
    ) -> None:
        self.app = app
        if isinstance(rules, QuotaPolicy):
            self.policy = rules
        else:
            if store is None:
                raise TypeError("QuotaLayer needs a store when given rules")
            self.policy = QuotaPolicy(
                rules, store, tiers=tiers, emergency=emergency, emergency_factor=emergency_factor
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        decision = await policy.admit(scope)
        if decision is None:
            await self.app(scope, receive, send)
            return
        scope[CLIENT_SCOPE_KEY] = decision.identity
        if isinstance(decision, QuotaRefusal):
            await control.send_body(
                send,
                429,
                refusal_body(decision),
                b"application/json",
                retry_after=decision.retry_after_s,
            )
            return
        try:
            await self.app(scope, receive, send)
        except BaseException:
            # shielded: a cancelled request (client gone) still gives its slots back
            await asyncio.shield(policy.finish(decision))
            raise
        await policy.finish(decision)

    async def aclose(self) -> None:
        """Close the policy's store (stops lease renewal, closes a Redis client it owns)."""
        await self.policy.store.aclose()
