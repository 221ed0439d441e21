"""Configuration of the guard's process-health policies: the memory budget, event-loop health.

Two sections of `GuardConfig` (``memory=MemoryBudgetConfig(...)``,
``event_loop=LoopHealthConfig(...)``, or plain dicts through `GuardConfig.from_dict`), checked
when built like the others. What they do: guard/memory_budget.py and guard/loop_health.py;
docs/policies.md explains both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crisisctl.guard.config_base import Priority
from crisisctl.guard.config_base import check as _check

#: at most this many cleanup hooks per guard (their names are metric label values)
MAX_HOOKS = 32


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class MemoryBudgetConfig:
    """The process's memory budget, in MiB of resident memory (RSS; 1 MiB = 1,048,576 bytes).

    Off by default. Past `soft_mb` the guard runs its cleanup hooks (`hooks`, then those added
    with ``guard.memory.on_pressure(fn)``, then ``gc.collect()`` when `collect`, then glibc's
    ``malloc_trim(0)`` when `trim`), at most once per `cooldown_s`; an async hook is cancelled
    after `hook_timeout_s`. Past `hard_mb` the routes of priority ≤ `shed_priority` are refused
    (503 + Retry-After) until RSS is back under `soft_mb`. In emergency mode both budgets are
    multiplied by `emergency_factor` (default 0.9: clean up and shed earlier while the service
    is already in trouble). `hard_mb` needs `soft_mb` (where shedding stops).

    Periodic cleanup hooks (``guard.memory.every(period_s, fn)``, guard/periodic.py) run every
    `period_s` whether or not a budget is set, and past `soft_mb` with the others; they share
    `hook_timeout_s` and the 32-hook bound (counted apart).
    """

    soft_mb: float | None = None
    hard_mb: float | None = None
    cooldown_s: float = 30.0
    hook_timeout_s: float = 2.0
    shed_priority: Priority | str = Priority.LOW
    emergency_factor: float = 0.9
    collect: bool = True
    trim: bool = True
    #: cleanup callables (sync or async, no arguments), run in this order past the soft budget
    hooks: tuple[Callable[[], Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("soft_mb", "hard_mb"):
            value = getattr(self, name)
            _check(
                value is None or (_number(value) and value > 0),
                f"memory {name} must be a positive number of MiB (e.g. 512) or unset, "
                f"not {value!r}",
            )
        _check(
            self.hard_mb is None or self.soft_mb is not None,
            "memory hard_mb needs soft_mb too (shedding stops once RSS is back under the soft "
            "budget): set soft_mb below hard_mb, e.g. soft_mb=400, hard_mb=500",
        )
        _check(
            self.hard_mb is None or self.soft_mb is None or self.soft_mb <= self.hard_mb,
            f"memory soft_mb ({self.soft_mb}) must not exceed hard_mb ({self.hard_mb}): "
            "the soft budget is where cleanup starts, the hard one where shedding starts",
        )
        _check(
            _number(self.cooldown_s) and self.cooldown_s >= 0,
            f"memory cooldown_s must be a number of seconds ≥ 0, not {self.cooldown_s!r}",
        )
        _check(
            _number(self.hook_timeout_s) and self.hook_timeout_s > 0,
            f"memory hook_timeout_s must be a number of seconds > 0, not {self.hook_timeout_s!r}",
        )
        _check(
            _number(self.emergency_factor) and 0.0 < self.emergency_factor <= 1.0,
            f"memory emergency_factor must be in (0, 1], not {self.emergency_factor!r}",
        )
        priority = Priority.parse(self.shed_priority)
        _check(
            priority < Priority.CRITICAL,
            "memory shed_priority must be below critical (critical routes are never shed): "
            "use low, normal or high",
        )
        object.__setattr__(self, "shed_priority", priority)
        hooks = tuple(self.hooks) if not callable(self.hooks) else (self.hooks,)
        _check(
            all(callable(hook) for hook in hooks),
            "memory hooks must be callables taking no arguments (sync or async)",
        )
        _check(len(hooks) <= MAX_HOOKS, f"at most {MAX_HOOKS} memory hooks")
        object.__setattr__(self, "hooks", hooks)

    @property
    def enabled(self) -> bool:
        """Whether there is a budget at all."""
        return self.soft_mb is not None


@dataclass(frozen=True, slots=True)
class LoopHealthConfig:
    """Event-loop health: the guard's ticker wakes every `interval_s` and its lateness is the
    event loop's lag (p50, p99 and max over the last `window_s` in the status).

    A lag beyond `lag_threshold_s` counts as overload for the adaptive concurrency limit (a
    cut, at most once per `signal_every_s`; None: lag is only reported). `enabled=False` keeps
    only the process figures' coarse lag (one tick a second).
    """

    enabled: bool = True
    interval_s: float = 0.05
    window_s: float = 10.0
    lag_threshold_s: float | None = 0.2
    signal_every_s: float = 1.0

    def __post_init__(self) -> None:
        _check(
            _number(self.interval_s) and 0.005 <= self.interval_s <= 1.0,
            f"event_loop interval_s must be between 0.005 and 1 second, not {self.interval_s!r}",
        )
        _check(
            _number(self.window_s) and self.interval_s * 10 <= self.window_s <= 600,
            f"event_loop window_s must be between 10 ticks ({self.interval_s * 10:g} s) and "
            f"600 s, not {self.window_s!r}",
        )
        _check(
            self.lag_threshold_s is None
            or (_number(self.lag_threshold_s) and self.lag_threshold_s > 0),
            f"event_loop lag_threshold_s must be a number of seconds > 0 (e.g. 0.2) or None, "
            f"not {self.lag_threshold_s!r}",
        )
        _check(
            _number(self.signal_every_s) and self.signal_every_s > 0,
            f"event_loop signal_every_s must be > 0 seconds, not {self.signal_every_s!r}",
        )
