"""crisisctl.guard — drop-in overload protection for any ASGI app.

from crisisctl.guard import Guard, GuardConfig
app = Guard(app, GuardConfig(rate_limit="100/second;3000/minute", timeout_s=10))

`Operation`, `OperationRefused`, `operation_of` and `operations_of` (guard/operations.py) are
imported on first use: they pull in the quota store and its Redis client.
"""

from typing import Any

from crisisctl.guard.config import (
    BreakerConfig,
    ConcurrencyConfig,
    EmergencyConfig,
    GuardConfig,
    GuardConfigError,
    OperationQuota,
    Priority,
    RateLimit,
    RouteRule,
    parse_limits,
)
from crisisctl.guard.health_config import LoopHealthConfig, MemoryBudgetConfig
from crisisctl.guard.middleware import Guard
from crisisctl.guard.track import track

__all__ = [
    "BreakerConfig",
    "ConcurrencyConfig",
    "EmergencyConfig",
    "Guard",
    "GuardConfig",
    "GuardConfigError",
    "LoopHealthConfig",
    "MemoryBudgetConfig",
    "Operation",
    "OperationQuota",
    "OperationRefused",
    "Priority",
    "RateLimit",
    "RouteRule",
    "operation_of",
    "operations_of",
    "parse_limits",
    "track",
]

_LAZY = ("Operation", "OperationRefused", "operation_of", "operations_of")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from crisisctl.guard import operations

        return getattr(operations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
