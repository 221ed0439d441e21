"""SQLAlchemy 2 models of the incident store (the Alembic migrations create the same schema).

Tables: ``incidents`` (one row per incident with its milestones, roles and impact),
``incident_events`` (the append-only timeline), ``action_items``, ``root_causes``, ``lessons``,
``baselines`` (triage's saved healthy profiles), and the watch response's state:
``watch_alerts`` (alerts by fingerprint), ``watch_incidents`` (runbook level, cooldowns),
``watch_silences`` and ``intake_alerts`` (Alertmanager notifications by dedup key). Every
timestamp is stored as UTC and read back timezone-aware (`UTCDateTime`), on SQLite as on
PostgreSQL. Nothing outside the ``incidents`` package sees these classes: the store hands out
frozen records instead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps it as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: give a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class Incident(Base):
    """One incident: identity, lifecycle state, milestones, roles, impact."""

    __tablename__ = "incidents"
    __table_args__ = (UniqueConstraint("open_dedup_key", name="uq_incidents_open_dedup_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    service: Mapped[str | None] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(20), index=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=1)
    dedup_key: Mapped[str | None] = mapped_column(String(300))
    # equals dedup_key while the incident is open, NULL afterwards: the unique index on it keeps
    # one open incident per key (NULLs never collide on SQLite or PostgreSQL)
    open_dedup_key: Mapped[str | None] = mapped_column(String(300))
    summary: Mapped[str | None] = mapped_column(Text)
    commander: Mapped[str | None] = mapped_column(String(200))
    scribe: Mapped[str | None] = mapped_column(String(200))
    comms: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mitigated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    peak_latency_ms: Mapped[float | None] = mapped_column(Float)
    baseline_latency_ms: Mapped[float | None] = mapped_column(Float)
    degradation_factor: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    affected_requests: Mapped[int | None] = mapped_column(Integer)
    affected_users: Mapped[int | None] = mapped_column(Integer)
    downtime_ms: Mapped[float | None] = mapped_column(Float)


class Event(Base):
    """One timeline entry; rows are only ever added (and pinned/unpinned)."""

    __tablename__ = "incident_events"
    __table_args__ = (Index("ix_incident_events_incident_at", "incident_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(100))
    author: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)


class ActionItem(Base):
    """A follow-up: mitigate, prevent or process work with an owner and a due date."""

    __tablename__ = "action_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(200))
    due_date: Mapped[date | None] = mapped_column(Date)
    priority: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RootCause(Base):
    """A root cause: category, the cause in one sentence, the evidence behind it."""

    __tablename__ = "root_causes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    category: Mapped[str] = mapped_column(String(100))
    cause: Mapped[str] = mapped_column(Text)
    evidence: Mapped[list[str]] = mapped_column(JSON)
    author: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lesson(Base):
    """A lesson learned: what went well, what went wrong, where we got lucky."""

    __tablename__ = "lessons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BaselineRow(Base):
    """A saved healthy profile of a service (written and read by triage)."""

    __tablename__ = "baselines"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WatchAlert(Base):
    """One alert of `crisisctl watch` by fingerprint (rule + labels): its latest state, the
    incident it belongs to and the silence muting it, so a restarted watch resumes where it was."""

    __tablename__ = "watch_alerts"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    service: Mapped[str] = mapped_column(String(200), index=True)
    severity: Mapped[str] = mapped_column(String(2))
    state: Mapped[str] = mapped_column(String(10), index=True)
    summary: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    active_since: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    silenced_by: Mapped[int | None] = mapped_column(Integer)


class WatchIncident(Base):
    """The response's state of one incident watch opened: runbook level and since when, when
    the service became healthy, and the last notification sent per kind (for the cooldown)."""

    __tablename__ = "watch_incidents"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(200), index=True)
    level: Mapped[int] = mapped_column(Integer)
    level_since: Mapped[datetime] = mapped_column(UTCDateTime)
    healthy_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified: Mapped[dict[str, str]] = mapped_column(JSON)


class WatchSilence(Base):
    """A silence: alerts matching `rule` (if set) and every label in `matchers` neither notify
    nor run actions between `starts_at` and `ends_at`."""

    __tablename__ = "watch_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str | None] = mapped_column(String(200))
    matchers: Mapped[dict[str, str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IntakeAlert(Base):
    """One alert notification the Alertmanager intake received, unique on `dedup_key`
    (Alertmanager fingerprint + startsAt + status): a repeat or an HA peer's copy is stored
    once. `processed_at` is set once the response side has booked it (None: book it again)."""

    __tablename__ = "intake_alerts"
    __table_args__ = (UniqueConstraint("dedup_key", name="uq_intake_alerts_dedup_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(64))
    am_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(10))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    alertname: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    annotations: Mapped[dict[str, str]] = mapped_column(JSON)
    generator_url: Mapped[str] = mapped_column(Text)
    receiver: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
