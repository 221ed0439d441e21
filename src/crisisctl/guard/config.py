"""Configuration of the guard: plain dataclasses, validated when built, no required field.

Everything has a default that protects a service without tuning (adaptive concurrency, a
circuit breaker per route, metrics); rate limits and timeouts are opt-in because only the
service owner knows their right values. Limit strings follow the familiar `limits` syntax:
``"10/second;300/minute"``, ``"5 per 10 seconds"``, ``"100/s"``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from crisisctl.guard.config_base import GuardConfigError as GuardConfigError
from crisisctl.guard.config_base import Priority as Priority
from crisisctl.guard.config_base import check as _check
from crisisctl.guard.health_config import LoopHealthConfig, MemoryBudgetConfig
from crisisctl.guard.operation_config import OperationQuota as OperationQuota
from crisisctl.guard.operation_config import check_operation_names, operations_from_data
from crisisctl.guard.types import Scope

Strategy = Literal["gcra", "sliding-window"]
STRATEGIES: tuple[str, ...] = ("gcra", "sliding-window")

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_LIMIT_RE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*([a-zA-Z]+)\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`amount` requests per `period` seconds."""

    amount: int
    period: float

    @property
    def name(self) -> str:
        """A short, stable policy name for headers and metrics, e.g. ``10-per-1s``."""
        period = int(self.period) if self.period == int(self.period) else self.period
        return f"{self.amount}-per-{period}s"

    def __str__(self) -> str:
        period = int(self.period) if self.period == int(self.period) else self.period
        return f"{self.amount}/{period}s"


def parse_limits(text: str) -> tuple[RateLimit, ...]:
    """Parse ``"10/second;300/minute"`` into rate limits; raise GuardConfigError when invalid."""
    limits: list[RateLimit] = []
    for part in re.split(r"[;,]", text):
        if not part.strip():
            continue
        match = _LIMIT_RE.match(part)
        unit = match.group(3).lower() if match else ""
        if not match or unit not in _UNITS:
            raise GuardConfigError(
                f"invalid rate limit {part.strip()!r}: write it like '10/second', "
                "'300/minute' or '5 per 10 seconds', several joined with ';'"
            )
        amount = int(match.group(1))
        multiple = int(match.group(2) or 1)
        if amount < 1 or multiple < 1:
            raise GuardConfigError(f"invalid rate limit {part.strip()!r}: numbers must be ≥ 1")
        limits.append(RateLimit(amount, multiple * _UNITS[unit]))
    if not limits:
        raise GuardConfigError(f"empty rate limit {text!r}: write it like '10/second;300/minute'")
    return tuple(limits)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Per-route circuit breaker (closed → open → half-open → closed).

    Opens when, over the last `window_s` seconds and at least `min_calls` calls, the share of
    failures (5xx from the app, exceptions, timeouts) reaches `failure_ratio`, or the share of
    calls slower than `slow_call_s` reaches `slow_call_ratio`. Stays open `open_s` seconds, then
    lets `half_open_calls` probes through; all succeed → closed, any fails → open again.
    """

    enabled: bool = True
    window_s: float = 10.0
    min_calls: int = 20
    failure_ratio: float = 0.5
    slow_call_s: float | None = None
    slow_call_ratio: float = 0.8
    open_s: float = 5.0
    half_open_calls: int = 3

    def __post_init__(self) -> None:
        _check(self.window_s >= 1.0, "breaker window_s must be at least 1 second")
        _check(self.min_calls >= 1, "breaker min_calls must be at least 1")
        _check(0.0 < self.failure_ratio <= 1.0, "breaker failure_ratio must be in (0, 1]")
        _check(0.0 < self.slow_call_ratio <= 1.0, "breaker slow_call_ratio must be in (0, 1]")
        _check(self.slow_call_s is None or self.slow_call_s > 0, "breaker slow_call_s must be > 0")
        _check(self.open_s > 0, "breaker open_s must be > 0")
        _check(self.half_open_calls >= 1, "breaker half_open_calls must be at least 1")


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """Concurrency limit and shedding queue.

    `mode`: "adaptive" (the limit follows observed latency, see concurrency.py), "static"
    (`limit` is fixed) or "off". Requests over the limit wait in a queue of `queue_size`;
    under standing overload the queue is served newest-first and a waiter is shed after
    `queue_target_s` (CoDel's target), otherwise after `queue_timeout_s` (CoDel's interval).

    `scope`: "route" (each route label has its own limit and queue, and `max_limit` caps the
    non-critical requests in flight over all routes together) or "service" (one limit for
    every route). See concurrency.py.
    """

    mode: Literal["adaptive", "static", "off"] = "adaptive"
    scope: Literal["route", "service"] = "route"
    limit: int = 32
    min_limit: int = 1
    max_limit: int = 1000
    queue_size: int = 64
    queue_timeout_s: float = 0.1
    queue_target_s: float = 0.005
    #: adaptive: observed latency may exceed the no-load latency by this factor before the
    #: limit is cut.
    tolerance: float = 1.5
    #: adaptive: how much of each new estimate enters the limit (exponential smoothing).
    smoothing: float = 0.2

    def __post_init__(self) -> None:
        _check(
            self.mode in ("adaptive", "static", "off"),
            "concurrency mode must be adaptive, static or off",
        )
        _check(self.scope in ("route", "service"), "concurrency scope must be route or service")
        _check(self.min_limit >= 1, "concurrency min_limit must be at least 1")
        _check(self.max_limit >= self.min_limit, "concurrency max_limit must be ≥ min_limit")
        _check(
            self.min_limit <= self.limit <= self.max_limit,
            "concurrency limit must lie in [min_limit, max_limit]",
        )
        _check(self.queue_size >= 0, "concurrency queue_size must be ≥ 0")
        _check(self.queue_timeout_s > 0 and self.queue_target_s > 0, "queue timeouts must be > 0")
        _check(self.tolerance >= 1.0, "concurrency tolerance must be ≥ 1.0")
        _check(0.0 < self.smoothing <= 1.0, "concurrency smoothing must be in (0, 1]")  # fmt: skip


@dataclass(frozen=True, slots=True)
class EmergencyConfig:
    """What `emergency` mode tightens and how `recovering` ramps back to normal.

    In emergency the concurrency limit is multiplied by `concurrency_factor`, every rate limit
    by `rate_factor` (or replaced by a rule's `emergency_rate_limit`), and routes whose
    priority is ≤ `shed_priority` are refused outright. In `recovering` both factors ramp
    linearly back to 1 over `ramp_s` seconds (the seeds' 120-second cooldown), then the guard
    returns to `normal` by itself.
    """

    concurrency_factor: float = 0.5
    rate_factor: float = 0.5
    shed_priority: Priority = Priority.LOW
    ramp_s: float = 120.0

    def __post_init__(self) -> None:
        _check(
            0.0 < self.concurrency_factor <= 1.0, "emergency concurrency_factor must be in (0, 1]"
        )
        _check(0.0 < self.rate_factor <= 1.0, "emergency rate_factor must be in (0, 1]")
        _check(
            Priority.parse(self.shed_priority) < Priority.CRITICAL,
            "emergency shed_priority must be below critical (critical routes are never shed): "
            "use low, normal or high",
        )
        _check(self.ramp_s >= 0, "emergency ramp_s must be ≥ 0")  # fmt: skip


#: statuses RFC 9111 §15.1 lets a cache store without explicit freshness ("heuristically
#: cacheable"); 206 is left out (the layer stores no partial content)
CACHEABLE_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)
CACHE_STORES: tuple[str, ...] = ("memory", "redis")


@dataclass(frozen=True, slots=True)
class CacheRule:
    """Response caching for the GET/HEAD requests of one route (see guard/cache.py).

    A response is fresh for `ttl_s` (bounded by the response's own ``s-maxage``/``max-age``),
    then may be served stale for `stale_while_revalidate_s` while one background request
    refreshes it, and for `stale_if_error_s` while the origin fails (5xx, exception) or the
    guard cannot call it. The key holds the path, the query parameters named in
    `query_params` (None: every parameter, sorted) and the request headers named in `headers`
    (the response's ``Vary`` adds its own). Requests carrying ``Authorization`` or ``Cookie``
    bypass the cache unless `cache_authorized` (then add those headers to `headers` if the
    content depends on them). Only `statuses` are stored; bodies over `max_body_bytes` pass
    through unstored. In emergency mode every window is multiplied by `emergency_ttl_factor`.
    Concurrent misses of one key wait up to `single_flight_wait_s` for the first one's answer.
    """

    ttl_s: float = 60.0
    stale_while_revalidate_s: float = 0.0
    stale_if_error_s: float = 0.0
    query_params: tuple[str, ...] | None = None
    headers: tuple[str, ...] = ()
    store: Literal["memory", "redis"] = "memory"
    statuses: tuple[int, ...] = (200,)
    cache_authorized: bool = False
    max_body_bytes: int = 1_048_576
    emergency_ttl_factor: float = 1.0
    single_flight_wait_s: float = 5.0

    def __post_init__(self) -> None:
        _check(self.ttl_s > 0, f"cache ttl_s must be > 0, not {self.ttl_s!r}")
        _check(
            self.stale_while_revalidate_s >= 0 and self.stale_if_error_s >= 0,
            "cache stale_while_revalidate_s and stale_if_error_s must be ≥ 0",
        )
        _check(
            self.store in CACHE_STORES, f"unknown cache store {self.store!r}: use memory or redis"
        )
        _check(self.max_body_bytes >= 0, "cache max_body_bytes must be ≥ 0")
        _check(self.emergency_ttl_factor >= 1.0, "cache emergency_ttl_factor must be ≥ 1.0")
        _check(self.single_flight_wait_s > 0, "cache single_flight_wait_s must be > 0")
        statuses = tuple(int(s) for s in self.statuses)
        wrong = sorted(set(statuses) - CACHEABLE_STATUSES)
        _check(
            not wrong,
            f"cache statuses {wrong} are not cacheable without validation: "
            f"use some of {sorted(CACHEABLE_STATUSES)}",
        )
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "headers", _names(self.headers))
        if self.query_params is not None:
            object.__setattr__(self, "query_params", _names(self.query_params, lower=False))


def _names(values: Sequence[str] | str, *, lower: bool = True) -> tuple[str, ...]:
    """A tuple of names from a sequence or a comma/space separated string (YAML/JSON)."""
    items = re.split(r"[\s,]+", values) if isinstance(values, str) else list(values)
    return tuple(sorted({(v.lower() if lower else v) for v in items if v}))


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Policies for the paths matching `pattern` (and `methods`, if given).

    `pattern` uses route-template syntax: ``/api/scans/{id}`` matches one segment per
    parameter, ``{name:path}`` or a trailing ``*`` matches the rest. The first matching rule
    wins. Unset fields fall back to the guard-wide defaults.
    """

    pattern: str
    methods: tuple[str, ...] | None = None
    rate_limit: str | None = None
    emergency_rate_limit: str | None = None
    strategy: Strategy | None = None
    priority: Priority | str = Priority.NORMAL
    timeout_s: float | None = None
    breaker: bool = True
    #: at most this many requests of the route in flight at once, over every instance
    #: sharing the storage (guard/quota.py); None = no route quota
    max_concurrent: int | None = None
    #: at most this many in flight per client key (a tier may set its own); None = none
    max_concurrent_per_key: int | None = None
    #: the quotas in emergency mode; None = the normal value times the emergency
    #: concurrency_factor (at least 1)
    emergency_max_concurrent: int | None = None
    emergency_max_concurrent_per_key: int | None = None
    cache: CacheRule | None = None
    #: the name of an operation quota (GuardConfig.operations) checked at admission: while
    #: it is full the request gets 429; admitted, it holds one slot the app may keep for the
    #: background work it starts (guard/operations.py)
    quota: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cache, Mapping):  # from YAML/JSON
            object.__setattr__(self, "cache", CacheRule(**self.cache))
        _check(self.pattern.startswith("/"), f"route pattern {self.pattern!r} must start with '/'")
        for name in (
            "max_concurrent", "max_concurrent_per_key",
            "emergency_max_concurrent", "emergency_max_concurrent_per_key",
        ):  # fmt: skip
            value = getattr(self, name)
            _check(
                value is None or (isinstance(value, int) and value >= 1),
                f"route {name} must be a whole number ≥ 1 (or unset), not {value!r}",
            )
        if self.rate_limit is not None:
            parse_limits(self.rate_limit)
        if self.emergency_rate_limit is not None:
            parse_limits(self.emergency_rate_limit)
        _check(
            self.strategy in (None, *STRATEGIES),
            f"unknown strategy {self.strategy!r}: use gcra or sliding-window",
        )
        _check(self.timeout_s is None or self.timeout_s > 0, "route timeout_s must be > 0")
        object.__setattr__(self, "priority", Priority.parse(self.priority))
        if self.methods is not None:
            methods: Sequence[str] = self.methods
            if isinstance(methods, str):  # "POST" or "GET, HEAD" from YAML/JSON, not "P","O",…
                methods = [m for m in re.split(r"[\s,]+", methods) if m]
            object.__setattr__(self, "methods", tuple(m.upper() for m in methods))  # fmt: skip


KeyFunc = Callable[[Scope], str]

#: a tier's name: lower-case letters, digits, '_' or '-' (e.g. free, pro, internal)
_TIER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class TierConfig:
    """Limits of one client tier (``free``, ``pro``, ``internal``), looked up per request.

    A tiered key function (guard/tiers.py) names each request's tier. Every field left None
    keeps the route's (or guard-wide) value for requests of that tier.
    """

    name: str
    #: replaces the route's (or guard-wide) rate limit for this tier, e.g. "1000/minute"
    rate_limit: str | None = None
    #: replaces the route's `max_concurrent_per_key` on routes that have a quota
    max_concurrent_per_key: int | None = None
    emergency_max_concurrent_per_key: int | None = None

    def __post_init__(self) -> None:
        _check(
            isinstance(self.name, str) and bool(_TIER_NAME.match(self.name)),
            f"tier name {self.name!r} must be 1-32 lower-case letters, digits, '_' or '-', "
            "e.g. 'free' or 'pro'",
        )
        if self.rate_limit is not None:
            parse_limits(self.rate_limit)
        for name in ("max_concurrent_per_key", "emergency_max_concurrent_per_key"):
            value = getattr(self, name)
            _check(
                value is None or (isinstance(value, int) and value >= 1),
                f"tier {self.name} {name} must be a whole number ≥ 1 (or unset), not {value!r}",
            )


DEFAULT_CRITICAL_PATHS: tuple[str, ...] = (
    "/health",
    "/healthz",
    "/livez",
    "/readyz",
    "/api/health",
)

#: who may read the control surface without a token by default: loopback, the private ranges
#: of RFC 1918 and RFC 4193 (fc00::/7), and link-local addresses (never routed beyond one link)
DEFAULT_CONTROL_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8", "::1/128",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
    "169.254.0.0/16", "fe80::/10",
)  # fmt: skip
CONTROL_READ_MODES: tuple[str, ...] = ("trusted", "open")


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """All guard settings. `GuardConfig()` alone is a sound default."""

    #: where the control surface lives: <prefix>/status, /metrics, /health, /mode
    prefix: str = "/_crisis"
    #: bearer token for POST <prefix>/mode; None reads CRISISCTL_GUARD_TOKEN; "" disables it.
    token: str | None = None
    #: bearer token for reading status, metrics and the mode history from anywhere (the write
    #: token is accepted too); None reads CRISISCTL_GUARD_READ_TOKEN; "" means none
    read_token: str | None = None
    #: who may read without a token: "trusted" (peers in `control_networks`) or "open" (anyone)
    control_read: Literal["trusted", "open"] = "trusted"
    #: networks (IPs or CIDRs) trusted to read the control surface without a token
    control_networks: tuple[str, ...] = DEFAULT_CONTROL_NETWORKS
    #: per-client rate limit of <prefix>/status and <prefix>/metrics; None = no limit
    control_rate_limit: str | None = "10/second"
    #: how often status and metrics are refreshed in the background while they are read
    #: (seconds; a read serves figures at most twice this old); 0 = every read refreshes
    control_refresh_s: float = 1.0
    #: guard-wide rate limit for routes without their own, e.g. "100/second;3000/minute"
    rate_limit: str | None = None
    strategy: Strategy = "gcra"
    #: "memory://", "redis://host:port/db" or "redis+cluster://host:port" (a Redis Cluster):
    #: with Redis, limits and the mode are shared by every instance
    storage: str = "memory://"
    #: every Redis key and channel of the guard starts with this
    storage_prefix: str = "crisisctl"
    #: how long a Redis round trip may take before the guard falls back to local limits
    storage_timeout_s: float = 0.25
    #: rate-limit key: client IP by default; any callable scope -> str
    key_func: KeyFunc | None = None
    #: peers (IPs or CIDRs) whose proxy header is believed
    trusted_proxies: tuple[str, ...] = ()
    #: the header those proxies write: "x-forwarded-for" or "forwarded" (RFC 7239); only
    #: that one is read (a proxy passes the other through from the client untouched)
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    routes: tuple[RouteRule, ...] = ()
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    emergency: EmergencyConfig = field(default_factory=EmergencyConfig)
    #: per-request timeout (seconds to the first response byte); None = no timeout
    timeout_s: float | None = None
    #: paths always treated as critical (never shed), in addition to the control surface
    critical_paths: tuple[str, ...] = DEFAULT_CRITICAL_PATHS
    #: send RateLimit / RateLimit-Policy headers on rate-limited routes
    rate_limit_headers: bool = True
    #: when RateLimit-Policy (the static policy) goes with an admitted response: "first" — a
    #: client's first response, then about once per longest limit period (RateLimit, the live
    #: figures, is on every response; refusals carry both) — or "always"
    rate_limit_policy_header: Literal["first", "always"] = "first"
    #: read route templates from the wrapped app (Starlette/FastAPI) for metric labels
    discover_routes: bool = True
    #: at most this many distinct route labels; further ones fold into "<other>"
    max_route_labels: int = 500
    #: client tiers and their limits (guard/tiers.py); empty = everyone in `default_tier`
    tiers: tuple[TierConfig, ...] = ()
    #: the tier of a request whose key function names none, an unknown one, or raises
    default_tier: str = "free"
    #: how long a concurrency-quota slot outlives an instance that stopped renewing it
    #: (a crashed one); live instances renew every third of it while the work runs
    quota_lease_s: float = 10.0
    #: the memory budget (guard/memory_budget.py); off until soft_mb is set
    memory: MemoryBudgetConfig = field(default_factory=MemoryBudgetConfig)
    #: event-loop lag and thread-pool depth (guard/loop_health.py)
    event_loop: LoopHealthConfig = field(default_factory=LoopHealthConfig)
    #: named operation quotas (guard/operations.py), held by the app around background work
    operations: tuple[OperationQuota, ...] = ()

    def __post_init__(self) -> None:
        _check(
            self.prefix.startswith("/") and not self.prefix.endswith("/"),
            f"prefix {self.prefix!r} must start with '/' and not end with '/'",
        )
        if self.rate_limit is not None:
            parse_limits(self.rate_limit)
        _check(
            self.control_read in CONTROL_READ_MODES,
            f"unknown control_read {self.control_read!r}: use 'trusted' (loopback and private "
            "networks, or a read token) or 'open' (anyone may read status and metrics)",
        )
        if self.control_rate_limit is not None:
            parse_limits(self.control_rate_limit)
        _check(
            isinstance(self.control_refresh_s, int | float)
            and not isinstance(self.control_refresh_s, bool)
            and 0.0 <= self.control_refresh_s <= 60.0,
            f"control_refresh_s {self.control_refresh_s!r} must be between 0 (every read "
            "refreshes) and 60 seconds",
        )
        if isinstance(self.control_networks, str):  # "10.0.0.0/8, ::1" from an env var or YAML
            parts = [n for n in re.split(r"[\s,]+", self.control_networks) if n]
            object.__setattr__(self, "control_networks", tuple(parts))
        for network in self.control_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise GuardConfigError(
                    f"control network {network!r} is not an IP address or CIDR network: "
                    "write it like '10.0.0.0/8' or '::1'"
                ) from None
        _check(
            self.strategy in STRATEGIES,
            f"unknown strategy {self.strategy!r}: use gcra or sliding-window",
        )
        _check(
            self.storage.startswith(("memory://", "redis://", "rediss://", "unix://",
                                     "redis+cluster://", "rediss+cluster://")),
            f"unknown storage {self.storage!r}: use memory://, redis://host:port/db "
            "or redis+cluster://host:port",
        )  # fmt: skip
        _check(
            bool(self.storage_prefix) and not any(c in self.storage_prefix for c in "{} \t\n"),
            f"storage_prefix {self.storage_prefix!r} must be non-empty, without braces or "
            "spaces, e.g. 'crisisctl' or 'shop:crisisctl'",
        )
        _check(self.storage_timeout_s > 0, "storage_timeout_s must be > 0")
        _check(self.timeout_s is None or self.timeout_s > 0, "timeout_s must be > 0")
        _check(self.max_route_labels >= 1, "max_route_labels must be ≥ 1")
        _check(
            self.proxy_header in ("x-forwarded-for", "forwarded"),
            f"unknown proxy_header {self.proxy_header!r}: use x-forwarded-for or forwarded",
        )
        _check(
            self.rate_limit_policy_header in ("first", "always"),
            f"unknown rate_limit_policy_header {self.rate_limit_policy_header!r}: "
            "use first or always",
        )
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise GuardConfigError(
                    f"trusted proxy {proxy!r} is not an IP address or CIDR network"
                ) from None
        _check(self.quota_lease_s >= 0.1, "quota_lease_s must be ≥ 0.1 seconds")
        tier_names = [tier.name for tier in self.tiers]
        _check(
            len(set(tier_names)) == len(tier_names),
            f"tier names must be unique, got {tier_names}",
        )
        _check(
            bool(_TIER_NAME.match(self.default_tier)),
            f"default_tier {self.default_tier!r} must be a tier name like 'free'",
        )
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "operations", operations_from_data(self.operations))
        check_operation_names(self.operations, [(r.pattern, r.quota) for r in self.routes])
        object.__setattr__(self, "routes", tuple(self.routes))
        object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))
        object.__setattr__(self, "critical_paths", tuple(self.critical_paths))
        object.__setattr__(self, "control_networks", tuple(self.control_networks))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardConfig:
        """Build from plain data (YAML/JSON): nested sections and `routes` as dicts."""
        data = dict(data)
        try:
            if "concurrency" in data and isinstance(data["concurrency"], Mapping):
                data["concurrency"] = ConcurrencyConfig(**data["concurrency"])
            if "breaker" in data and isinstance(data["breaker"], Mapping):
                data["breaker"] = BreakerConfig(**data["breaker"])
            if "emergency" in data and isinstance(data["emergency"], Mapping):
                emergency = dict(data["emergency"])
                if "shed_priority" in emergency:
                    emergency["shed_priority"] = Priority.parse(emergency["shed_priority"])
                data["emergency"] = EmergencyConfig(**emergency)
            if isinstance(data.get("memory"), Mapping):
                data["memory"] = MemoryBudgetConfig(**data["memory"])
            if isinstance(data.get("event_loop"), Mapping):
                data["event_loop"] = LoopHealthConfig(**data["event_loop"])
            data["operations"] = operations_from_data(data.get("operations", ()))
            tiers: Any = data.get("tiers", ())
            if isinstance(tiers, Mapping):  # {"pro": {"rate_limit": ...}, ...}
                tiers = [{"name": name, **dict(spec or {})} for name, spec in tiers.items()]
            data["tiers"] = tuple(TierConfig(**t) if isinstance(t, Mapping) else t for t in tiers)
            routes: Sequence[Any] = data.get("routes", ())
            data["routes"] = tuple(RouteRule(**r) if isinstance(r, Mapping) else r for r in routes)
            for key in ("trusted_proxies", "critical_paths", "control_networks"):
                if key in data and not (key == "control_networks" and isinstance(data[key], str)):
                    data[key] = tuple(data[key])
            return cls(**data)
        except TypeError as exc:
            raise GuardConfigError(f"invalid guard configuration: {exc}") from None
