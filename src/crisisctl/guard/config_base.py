"""The guard configuration's shared vocabulary: its error type, route priorities, the check.

Kept apart from guard/config.py so that every configuration module (config.py,
health_config.py) can use them without importing one another; guard/config.py re-exports them.
"""

from __future__ import annotations

from enum import IntEnum


class GuardConfigError(ValueError):
    """A guard setting is invalid; the message says which and how to fix it."""


class Priority(IntEnum):
    """How important a route is when the guard must choose what to shed (higher = kept longer)."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    #: never shed, never queued, never rate limited unless a rule says so: health, control.
    CRITICAL = 3

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        """Accept a Priority, its name ("low", "critical") or its number."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in cls)
            raise GuardConfigError(f"unknown priority {value!r}: use one of {names}") from None


def check(condition: bool, message: str) -> None:
    """Raise GuardConfigError(`message`) unless `condition` holds."""
    if not condition:
        raise GuardConfigError(message)
