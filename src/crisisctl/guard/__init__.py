"""crisisctl.guard — drop-in overload protection for any ASGI app.

from crisisctl.guard import Guard, GuardConfig
app = Guard(app, GuardConfig(rate_limit="100/second;3000/minute", timeout_s=10))
"""

from crisisctl.guard.config import (
    BreakerConfig,
    ConcurrencyConfig,
    EmergencyConfig,
    GuardConfig,
    GuardConfigError,
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
    "Priority",
    "RateLimit",
    "RouteRule",
    "parse_limits",
    "track",
]
