"""Operation quotas' configuration: a named cap on expensive operations, not on requests.

A route quota (`RouteRule.max_concurrent`) counts requests in flight; it cannot cap work that
outlives its request (``POST /api/scans`` answers 202 and the scan runs in the background).
An `OperationQuota` is a guard-level named quota the app holds around that work
(guard/operations.py) and a route names with ``quota="scan"`` to be refused at admission
while the quota is full. Kept apart from guard/config.py, which re-exports `OperationQuota`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crisisctl.guard.config_base import check

__all__ = ["OperationQuota", "check_operation_names", "operations_from_data"]

#: an operation's name: it is a metric label and part of Redis key names, so short and plain
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")


@dataclass(frozen=True, slots=True)
class OperationQuota:
    """At most `max_concurrent` operations `name` at once (over every instance sharing the
    storage), at most `max_concurrent_per_key` per client key."""

    name: str
    max_concurrent: int | None = None
    max_concurrent_per_key: int | None = None
    #: the quotas in emergency mode; None = the normal value times the emergency
    #: concurrency_factor (at least 1)
    emergency_max_concurrent: int | None = None
    emergency_max_concurrent_per_key: int | None = None
    #: a slot held longer than this (seconds) is given back, with a WARNING: the safety net
    #: for work that never releases what it adopted (a lost task); None = held until released
    max_hold_s: float | None = None

    def __post_init__(self) -> None:
        check(
            isinstance(self.name, str) and bool(_NAME.match(self.name)),
            f"operation name {self.name!r} must be 1-48 of a-z 0-9 _ . - (starting with a letter "
            "or digit), e.g. 'scan' or 'report.render'",
        )
        for field in (
            "max_concurrent", "max_concurrent_per_key",
            "emergency_max_concurrent", "emergency_max_concurrent_per_key",
        ):  # fmt: skip
            value = getattr(self, field)
            check(
                value is None or (isinstance(value, int) and not isinstance(value, bool)
                                  and value >= 1),
                f"operation {self.name} {field} must be a whole number ≥ 1 (or unset), "
                f"not {value!r}",
            )  # fmt: skip
        check(
            self.max_hold_s is None
            or (isinstance(self.max_hold_s, int | float) and self.max_hold_s > 0),
            f"operation {self.name} max_hold_s must be > 0 seconds (or unset), "
            f"not {self.max_hold_s!r}",
        )
        check(
            self.max_concurrent is not None or self.max_concurrent_per_key is not None,
            f"operation {self.name} needs max_concurrent or max_concurrent_per_key "
            "(a quota with neither caps nothing)",
        )


def operations_from_data(data: Any) -> tuple[OperationQuota, ...]:
    """`operations` from YAML/JSON: ``{"scan": {"max_concurrent": 2}}`` or a list of dicts."""
    items: Iterable[Any]
    if isinstance(data, Mapping):
        items = [{"name": name, **dict(spec or {})} for name, spec in data.items()]
    else:
        items = data
    return tuple(OperationQuota(**i) if isinstance(i, Mapping) else i for i in items)


def check_operation_names(
    operations: Sequence[OperationQuota], route_quotas: Sequence[tuple[str, str | None]]
) -> None:
    """Operation names are unique, and each route's ``quota`` names one of them.

    `route_quotas`: (route pattern, its ``quota``) for every route rule.
    """
    names = [op.name for op in operations]
    check(len(set(names)) == len(names), f"operation names must be unique, got {names}")
    for pattern, quota in route_quotas:
        if quota is None:
            continue
        known = ", ".join(names) if names else "none is configured"
        check(
            quota in names,
            f"route {pattern} names the operation quota {quota!r}, which is not configured "
            f"({known}): add OperationQuota({quota!r}, max_concurrent=…) to the guard's "
            "operations",
        )
