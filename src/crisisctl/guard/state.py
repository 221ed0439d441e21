"""A public, read-only view of one guard's state, for its control surface and its metrics.

The control endpoints and the Prometheus collector read the guard only through this view:
they never touch its attributes, so the request path may keep its state however it likes.
The view copies nothing: every property reads the live value when asked, and collections come
back as read-only mappings (`types.MappingProxyType`) over the guard's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crisisctl.guard.breaker import CircuitBreaker
    from crisisctl.guard.concurrency import ConcurrencyLimiter
    from crisisctl.guard.loop_health import LoopHealth
    from crisisctl.guard.memory_budget import MemoryBudget
    from crisisctl.guard.metrics import RouteStats
    from crisisctl.guard.middleware import Guard
    from crisisctl.guard.modes import ModeState
    from crisisctl.guard.process import ProcessFigures
    from crisisctl.guard.ratelimit import RateLimitPolicy


class GuardState:
    """What a guard lets its control surface and metrics read (`guard.state`)."""

    __slots__ = ("_breakers", "_guard", "_policies", "_routes")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._routes: Mapping[str, RouteStats] = MappingProxyType(guard.route_stats)
        self._breakers: Mapping[str, CircuitBreaker] = MappingProxyType(guard.breakers)
        self._policies: Mapping[int, RateLimitPolicy] = MappingProxyType(guard.policies)

    # -- identity --------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def started_wall(self) -> float:
        """Wall-clock time (epoch seconds) the guard was built."""
        return self._guard.started_wall

    @property
    def clock(self) -> Callable[[], float]:
        """The guard's monotonic clock (seconds)."""
        return self._guard.clock

    @property
    def mode_endpoint_enabled(self) -> bool:
        """Whether POST <prefix>/mode is enabled (a write token is configured)."""
        return self._guard.token is not None

    @property
    def request_policies(self) -> Any:
        """The guard's cache and quotas (guard/policy_set.py `PolicySet`); None: none."""
        return self._guard.policy_set

    @property
    def process(self) -> ProcessFigures:
        """The process's own figures, sampled by the guard's ticker (`describe(now)`)."""
        return self._guard.process

    @property
    def memory(self) -> MemoryBudget:
        """The memory budget (`describe(now)`, `metrics()`)."""
        return self._guard.memory

    @property
    def event_loop(self) -> LoopHealth:
        """Event-loop lag and thread-pool depths (`describe(now)`, `metrics()`)."""
        return self._guard.event_loop

    # -- mode ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._guard.mode

    @property
    def modes(self) -> ModeState:
        """The mode, its factors and its history (read `describe()` or `mode`)."""
        return self._guard.modes

    # -- policies --------------------------------------------------------------------------
    @property
    def running_after_timeout(self) -> int:
        """Handlers past their timeout whose work (a worker thread) has not ended yet: they
        were answered 504 but still hold their concurrency slots."""
        return self._guard.running_after_timeout

    @property
    def concurrency(self) -> ConcurrencyLimiter | None:
        """The concurrency limiter, or None when concurrency control is off."""
        return self._guard.concurrency

    @property
    def policies(self) -> Mapping[int, RateLimitPolicy]:
        """The rate-limit policies built so far."""
        return self._policies

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """Circuit breakers by route label."""
        return self._breakers

    @property
    def routes(self) -> Mapping[str, RouteStats]:
        """Per-route counters and latency by route label, in the order routes were met."""
        return self._routes

    # -- health of the guard itself ----------------------------------------------------------
    @property
    def storage(self) -> dict[str, Any]:
        """The rate-limit storage's health, JSON-able."""
        health = self._guard.storage_health
        if health is None:
            return {"backend": "memory", "healthy": True}
        described: dict[str, Any] = health.describe()
        return described

    @property
    def storage_up(self) -> bool:
        health = self._guard.storage_health
        return health is None or bool(health.healthy)

    @property
    def storage_errors(self) -> int:
        health = self._guard.storage_health
        return 0 if health is None else int(health.errors_total)

    @property
    def storage_fallbacks(self) -> int:
        health = self._guard.storage_health
        return 0 if health is None else int(health.fallback_hits_total)

    @property
    def internal_errors(self) -> int:
        """Errors inside the guard's own code (the requests passed through untouched)."""
        return self._guard.internal_errors
