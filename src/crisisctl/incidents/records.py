"""Frozen records the incident store hands out (never ORM objects), with their JSON forms.

JSON forms follow the project's conventions: snake_case keys, durations in ms as floats,
timestamps ISO 8601 UTC, severity as "P0".."P3".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from crisisctl.incidents import models
from crisisctl.incidents.lifecycle import ESCALATION_LEVELS, Status, mttx
from crisisctl.severity import Severity


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a trailing Z, or None."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def ms(delta: timedelta | None) -> float | None:
    """A duration in milliseconds, or None."""
    return None if delta is None else delta.total_seconds() * 1000.0


@dataclass(frozen=True, slots=True)
class Impact:
    """What the incident cost: latency, errors, affected requests and users, downtime."""

    peak_latency_ms: float | None = None
    baseline_latency_ms: float | None = None
    degradation_factor: float | None = None
    error_rate: float | None = None
    affected_requests: int | None = None
    affected_users: int | None = None
    downtime_ms: float | None = None

    @property
    def factor(self) -> float | None:
        """The stored degradation factor, else peak ÷ baseline when both are known."""
        if self.degradation_factor is not None:
            return self.degradation_factor
        if self.peak_latency_ms is not None and self.baseline_latency_ms:
            return self.peak_latency_ms / self.baseline_latency_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_latency_ms": self.peak_latency_ms,
            "baseline_latency_ms": self.baseline_latency_ms,
            "degradation_factor": self.factor,
            "error_rate": self.error_rate,
            "affected_requests": self.affected_requests,
            "affected_users": self.affected_users,
            "downtime_ms": self.downtime_ms,
        }


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One incident as stored; `reused` is True when open_incident matched its dedup key."""

    id: int
    title: str
    service: str | None
    severity: Severity
    status: Status
    escalation_level: int
    dedup_key: str | None
    summary: str | None
    commander: str | None
    scribe: str | None
    comms: str | None
    started_at: datetime
    detected_at: datetime
    acknowledged_at: datetime | None
    mitigated_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    impact: Impact
    reused: bool = False

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def mttx(self) -> dict[str, timedelta | None]:
        """time_to_detect / _acknowledge / _mitigate / _resolve (None when not recorded)."""
        return mttx(
            self.started_at,
            self.detected_at,
            self.acknowledged_at,
            self.mitigated_at,
            self.resolved_at,
        )

    @classmethod
    def from_model(cls, row: models.Incident, *, reused: bool = False) -> IncidentRecord:
        return cls(
            id=row.id,
            title=row.title,
            service=row.service,
            severity=Severity[row.severity],
            status=Status(row.status),
            escalation_level=row.escalation_level,
            dedup_key=row.dedup_key,
            summary=row.summary,
            commander=row.commander,
            scribe=row.scribe,
            comms=row.comms,
            started_at=row.started_at,
            detected_at=row.detected_at,
            acknowledged_at=row.acknowledged_at,
            mitigated_at=row.mitigated_at,
            resolved_at=row.resolved_at,
            closed_at=row.closed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            impact=Impact(
                peak_latency_ms=row.peak_latency_ms,
                baseline_latency_ms=row.baseline_latency_ms,
                degradation_factor=row.degradation_factor,
                error_rate=row.error_rate,
                affected_requests=row.affected_requests,
                affected_users=row.affected_users,
                downtime_ms=row.downtime_ms,
            ),
            reused=reused,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "service": self.service,
            "severity": self.severity.name,
            "response_time": self.severity.response_time,
            "status": str(self.status),
            "open": self.is_open,
            "escalation_level": self.escalation_level,
            "escalation": ESCALATION_LEVELS[self.escalation_level],
            "dedup_key": self.dedup_key,
            "summary": self.summary,
            "roles": {"commander": self.commander, "scribe": self.scribe, "comms": self.comms},
            "started_at": iso(self.started_at),
            "detected_at": iso(self.detected_at),
            "acknowledged_at": iso(self.acknowledged_at),
            "mitigated_at": iso(self.mitigated_at),
            "resolved_at": iso(self.resolved_at),
            "closed_at": iso(self.closed_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            **{f"{name}_ms": ms(value) for name, value in self.mttx.items()},
            "impact": self.impact.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One timeline entry."""

    id: int
    incident_id: int
    kind: str
    text: str
    details: dict[str, Any]
    source: str
    author: str | None
    at: datetime
    pinned: bool

    @classmethod
    def from_model(cls, row: models.Event) -> EventRecord:
        return cls(
            id=row.id,
            incident_id=row.incident_id,
            kind=row.kind,
            text=row.text,
            details=dict(row.details or {}),
            source=row.source,
            author=row.author,
            at=row.at,
            pinned=row.pinned,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "kind": self.kind,
            "text": self.text,
            "details": self.details,
            "source": self.source,
            "author": self.author,
            "at": iso(self.at),
            "pinned": self.pinned,
        }


@dataclass(frozen=True, slots=True)
class ActionItemRecord:
    """A follow-up with kind (mitigate / prevent / process), owner, due date, priority, status."""

    id: int
    incident_id: int
    title: str
    kind: str
    owner: str | None
    due_date: date | None
    priority: str
    status: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_model(cls, row: models.ActionItem) -> ActionItemRecord:
        return cls(
            id=row.id,
            incident_id=row.incident_id,
            title=row.title,
            kind=row.kind,
            owner=row.owner,
            due_date=row.due_date,
            priority=row.priority,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "title": self.title,
            "kind": self.kind,
            "owner": self.owner,
            "due_date": None if self.due_date is None else self.due_date.isoformat(),
            "priority": self.priority,
            "status": self.status,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "completed_at": iso(self.completed_at),
        }


@dataclass(frozen=True, slots=True)
class RootCauseRecord:
    """A root cause with its category and evidence."""

    id: int
    category: str
    cause: str
    evidence: tuple[str, ...]
    author: str | None
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.RootCause) -> RootCauseRecord:
        return cls(
            id=row.id,
            category=row.category,
            cause=row.cause,
            evidence=tuple(row.evidence or ()),
            author=row.author,
            created_at=row.created_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "cause": self.cause,
            "evidence": list(self.evidence),
            "author": self.author,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class LessonRecord:
    """A lesson: kind is went_well, went_wrong or got_lucky."""

    id: int
    kind: str
    text: str
    author: str | None
    created_at: datetime

    @classmethod
    def from_model(cls, row: models.Lesson) -> LessonRecord:
        return cls(row.id, row.kind, row.text, row.author, row.created_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "text": self.text,
            "author": self.author,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    """An incident with everything attached to it, as the show and post-mortem views need."""

    incident: IncidentRecord
    events: tuple[EventRecord, ...] = ()
    actions: tuple[ActionItemRecord, ...] = ()
    root_causes: tuple[RootCauseRecord, ...] = ()
    lessons: tuple[LessonRecord, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.incident.to_dict(),
            "events": [e.to_dict() for e in self.events],
            "action_items": [a.to_dict() for a in self.actions],
            "root_causes": [c.to_dict() for c in self.root_causes],
            "lessons": [lesson.to_dict() for lesson in self.lessons],
        }
