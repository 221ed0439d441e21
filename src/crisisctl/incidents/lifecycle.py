"""The incident lifecycle and vocabulary: statuses, allowed transitions, escalation levels, kinds.

Pure functions and constants only (no database, no clock). The status lifecycle is

    detected → investigating → stabilizing → mitigated → resolved → postmortem → closed

Moving forward may skip states (a fix can land while still investigating); while the incident
is active it may fall back to an earlier active state (a relapse), and a resolved incident may be
reopened; ``postmortem`` and ``closed`` only follow ``resolved``, and ``closed`` is final.
Reaching a state sets the milestones it implies when they are not set yet (mitigated at the
latest when resolved, acknowledged at the latest when anyone moved the incident on).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

from crisisctl.incidents.db import StoreError
from crisisctl.severity import Severity


class Status(StrEnum):
    """Where an incident is in its lifecycle."""

    DETECTED = "detected"
    INVESTIGATING = "investigating"
    STABILIZING = "stabilizing"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"
    POSTMORTEM = "postmortem"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        """Still being worked on (not resolved, in post-mortem or closed)."""
        return self in ACTIVE_STATUSES


ORDER: Final[tuple[Status, ...]] = tuple(Status)
ACTIVE_STATUSES: Final = frozenset(
    {Status.DETECTED, Status.INVESTIGATING, Status.STABILIZING, Status.MITIGATED}
)

#: milestone column set on first reaching each status (and every later one)
MILESTONES: Final[dict[Status, str]] = {
    Status.INVESTIGATING: "acknowledged_at",
    Status.MITIGATED: "mitigated_at",
    Status.RESOLVED: "resolved_at",
    Status.CLOSED: "closed_at",
}

#: escalation levels of the emergency playbook
ESCALATION_LEVELS: Final[dict[int, str]] = {
    1: "automatic recovery",
    2: "manual intervention",
    3: "emergency rollback",
    4: "full system recovery",
}
ESCALATION_STEPS: Final[dict[int, str]] = {
    1: "the guard and automatic recovery handle it; monitor recovery and verify performance",
    2: "engineers investigate the root cause and run recovery procedures by hand; "
    "consider a configuration rollback",
    3: "roll back to the last known good version and prepare the post-mortem",
    4: "restart or roll back the whole system and communicate with users",
}
MAX_ESCALATION: Final = max(ESCALATION_LEVELS)

# timeline event kinds
EVENT_STATUS = "status_change"
EVENT_SEVERITY = "severity_change"
EVENT_ESCALATION = "escalation"
EVENT_NOTE = "note"
EVENT_ACTION = "action"
EVENT_TRIAGE = "triage"
EVENT_ALERT = "alert"
EVENT_GUARD_MODE = "guard_mode"
EVENT_VALIDATION = "validation"
EVENT_LOAD_REPORT = "load_report"
EVENT_OPENED = "opened"
EVENT_UPDATE = "update"
EVENT_KINDS: Final = (
    EVENT_OPENED,
    EVENT_STATUS,
    EVENT_SEVERITY,
    EVENT_ESCALATION,
    EVENT_NOTE,
    EVENT_ACTION,
    EVENT_TRIAGE,
    EVENT_ALERT,
    EVENT_GUARD_MODE,
    EVENT_VALIDATION,
    EVENT_LOAD_REPORT,
    EVENT_UPDATE,
)
#: kinds a person or another tool may log directly (the rest are written by the store)
LOGGABLE_KINDS: Final = (
    EVENT_NOTE,
    EVENT_ACTION,
    EVENT_TRIAGE,
    EVENT_ALERT,
    EVENT_GUARD_MODE,
    EVENT_VALIDATION,
    EVENT_LOAD_REPORT,
)

ACTION_KINDS: Final = ("mitigate", "prevent", "process")
ACTION_PRIORITIES: Final = ("high", "medium", "low")
ACTION_STATUSES: Final = ("open", "in_progress", "done", "cancelled")
LESSON_KINDS: Final = ("went_well", "went_wrong", "got_lucky")
LESSON_TITLES: Final[dict[str, str]] = {
    "went_well": "What went well",
    "went_wrong": "What went wrong",
    "got_lucky": "Where we got lucky",
}


def parse_status(text: str) -> Status:
    """The status named by `text` (case-insensitive); StoreError listing the choices."""
    try:
        return Status(text.strip().lower())
    except ValueError:
        choices = ", ".join(ORDER)
        raise StoreError(f"unknown status {text!r}: use one of {choices}.") from None


def parse_incident_severity(text: str | Severity) -> Severity:
    """P0..P3 from `text` or a Severity; OK is not an incident severity."""
    if isinstance(text, Severity):
        severity = text
    else:
        try:
            severity = Severity.parse(text)
        except ValueError:
            raise StoreError(f"unknown severity {text!r}: use P0, P1, P2 or P3.") from None
    if severity is Severity.OK:
        raise StoreError("an incident needs a severity of P0, P1, P2 or P3, not OK.")
    return severity


def check_transition(current: Status, target: Status) -> None:
    """Raise StoreError with the allowed next states when ``current → target`` is not allowed."""
    if target in allowed_next(current):
        return
    if current is target:
        raise StoreError(f"the incident is already {current}.")
    options = ", ".join(allowed_next(current)) or "none (closed is final)"
    raise StoreError(f"cannot move an incident from {current} to {target}: allowed are {options}.")


def allowed_next(current: Status) -> tuple[Status, ...]:
    """Every status `current` may move to, in lifecycle order."""
    if current in ACTIVE_STATUSES:
        return tuple(
            s
            for s in ORDER
            if s is not current
            and (s in ACTIVE_STATUSES or s is Status.RESOLVED)
            and s is not Status.DETECTED
        )
    if current is Status.RESOLVED:
        return (Status.INVESTIGATING, Status.POSTMORTEM, Status.CLOSED)
    if current is Status.POSTMORTEM:
        return (Status.CLOSED,)
    return ()


def milestones_reached(target: Status) -> list[str]:
    """Milestone columns implied by reaching `target` (all at or before it in the lifecycle)."""
    rank = ORDER.index(target)
    return [column for status, column in MILESTONES.items() if ORDER.index(status) <= rank]


def parse_escalation(level: int) -> int:
    """`level` if it is 1..4, else StoreError."""
    if level not in ESCALATION_LEVELS:
        raise StoreError(f"escalation level {level} does not exist: use 1 to {MAX_ESCALATION}.")
    return level


def choose(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` normalised (lower case, '-'/' ' → '_') if it is one of `choices`, else StoreError."""
    norm = value.strip().lower().replace("-", "_").replace(" ", "_")
    if norm not in choices:
        raise StoreError(f"unknown {what} {value!r}: use one of {', '.join(choices)}.")
    return norm


def mttx(
    started: datetime,
    detected: datetime,
    acknowledged: datetime | None,
    mitigated: datetime | None,
    resolved: datetime | None,
) -> dict[str, timedelta | None]:
    """Time to detect/acknowledge/mitigate/resolve; None where a milestone is missing.

    detect = detected − started, acknowledge = acknowledged − detected,
    mitigate = mitigated − started, resolve = resolved − started.
    """
    return {
        "time_to_detect": detected - started,
        "time_to_acknowledge": None if acknowledged is None else acknowledged - detected,
        "time_to_mitigate": None if mitigated is None else mitigated - started,
        "time_to_resolve": None if resolved is None else resolved - started,
    }


MTTX_DEFINITIONS: Final[dict[str, str]] = {
    "time_to_detect": "detected − started",
    "time_to_acknowledge": "acknowledged − detected",
    "time_to_mitigate": "mitigated − started",
    "time_to_resolve": "resolved − started",
}


def format_duration(delta: timedelta | None) -> str:
    """``1 h 05 min 03 s``-style text; "not recorded" for None."""
    if delta is None:
        return "not recorded"
    total = delta.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 60:
        return f"{sign}{total:.3g} s" if total < 10 else f"{sign}{round(total)} s"
    seconds = round(total)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ([f"{days} d"] if days else []) + ([f"{hours} h"] if days or hours else [])
    parts += [f"{minutes:02d} min" if parts else f"{minutes} min", f"{secs:02d} s"]
    return sign + " ".join(parts)


def parse_due_date(text: str) -> date:
    """An ISO date (YYYY-MM-DD); StoreError otherwise."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise StoreError(f"{text!r} is not a date: use YYYY-MM-DD, e.g. 2025-12-31.") from None
