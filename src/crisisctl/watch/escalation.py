"""Runbook arithmetic: which level an incident starts at, when it moves on, what may run.

Pure functions over a runbook (the `EscalationLevel` list of one severity) and instants: no
clock, no database, so the timers are tested with hand-picked times. An incident starts at the
runbook's first level; while it is not mitigated, it moves to the next level once the current
level's ``escalate_after`` has passed since it reached that level (one level per call: each
level's own timer then starts). Levels 3 and 4 (rollback, full recovery) run their actions only
when they say ``unattended: true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from crisisctl.watch.respond_config import EscalationLevel

#: levels from which actions need a person unless the runbook says they may run unattended
ATTENDED_FROM_LEVEL = 3


def first_level(runbook: Sequence[EscalationLevel]) -> EscalationLevel | None:
    """The level an incident starts at (None: the runbook is empty, notify only)."""
    return runbook[0] if runbook else None


def level_of(runbook: Sequence[EscalationLevel], number: int) -> EscalationLevel | None:
    """The runbook's level numbered `number`, or None when it has none."""
    return next((lvl for lvl in runbook if lvl.level == number), None)


def next_level(runbook: Sequence[EscalationLevel], number: int) -> EscalationLevel | None:
    """The level after level `number` (the first with a higher number), or None at the top."""
    higher = [lvl for lvl in runbook if lvl.level > number]
    return min(higher, key=lambda lvl: lvl.level) if higher else None


def escalation_due_at(
    runbook: Sequence[EscalationLevel], number: int, since: datetime
) -> datetime | None:
    """When an incident at level `number` since `since` escalates (None: it never does)."""
    current = level_of(runbook, number)
    if current is None or current.escalate_after is None:
        return None
    if next_level(runbook, number) is None:
        return None
    return since + timedelta(seconds=current.escalate_after)


def due_escalation(
    runbook: Sequence[EscalationLevel],
    number: int,
    since: datetime,
    now: datetime,
    *,
    mitigated: bool,
) -> EscalationLevel | None:
    """The level to escalate to at `now`, or None (mitigated, no timer, or not yet time)."""
    if mitigated:
        return None
    due = escalation_due_at(runbook, number, since)
    if due is None or now < due:
        return None
    return next_level(runbook, number)


def may_run_unattended(level: EscalationLevel) -> bool:
    """Whether the level's actions run without a person (always below level 3)."""
    return level.level < ATTENDED_FROM_LEVEL or level.unattended


__all__ = [
    "ATTENDED_FROM_LEVEL",
    "due_escalation",
    "escalation_due_at",
    "first_level",
    "level_of",
    "may_run_unattended",
    "next_level",
]
