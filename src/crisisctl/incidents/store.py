"""Incident store service functions: open, read, change state and append to the timeline.

Pure service functions taking the `Database` first and returning frozen records; each call is
one transaction. State changes lock the incident row (``SELECT … FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) so concurrent writers serialise, and timeline events are plain
inserts, so two processes logging to one incident at once lose nothing. Every state change
also writes its own timeline event (status_change, severity_change, escalation, update).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crisisctl.incidents import models
from crisisctl.incidents.db import ConflictError, Database, StoreError, utcnow
from crisisctl.incidents.lifecycle import (
    ACTIVE_STATUSES,
    ESCALATION_LEVELS,
    EVENT_ESCALATION,
    EVENT_KINDS,
    EVENT_OPENED,
    EVENT_SEVERITY,
    EVENT_STATUS,
    EVENT_UPDATE,
    MAX_ESCALATION,
    Status,
    check_transition,
    milestones_reached,
    parse_escalation,
    parse_incident_severity,
    parse_status,
)
from crisisctl.incidents.records import EventRecord, IncidentRecord, iso
from crisisctl.incidents.reports import summarise_report
from crisisctl.severity import Severity

#: fields `update_incident` may change, with the JSON-able type each takes
UPDATABLE: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "service": str,
    "summary": str,
    "commander": str,
    "scribe": str,
    "comms": str,
    "peak_latency_ms": (int, float),
    "baseline_latency_ms": (int, float),
    "degradation_factor": (int, float),
    "error_rate": (int, float),
    "affected_requests": int,
    "affected_users": int,
    "downtime_ms": (int, float),
}


def default_author() -> str:
    """``$CRISISCTL_AUTHOR``, else the OS user name, else "unknown"."""
    name = os.environ.get("CRISISCTL_AUTHOR", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def aware(value: datetime, what: str) -> datetime:
    """`value` if timezone-aware; StoreError otherwise (the store never guesses a zone)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError(f"the {what} time {value.isoformat()} has no timezone: add Z or +00:00.")
    return value


def check_text(value: str, what: str, limit: int = 300) -> str:
    """`value` stripped; StoreError when empty or longer than `limit`."""
    value = value.strip()
    if not value:
        raise StoreError(f"the {what} must not be empty.")
    if len(value) > limit:
        raise StoreError(f"the {what} is {len(value)} characters long: keep it under {limit}.")
    return value


def locked_incident(session: Session, incident_id: int) -> models.Incident:
    """The incident row, locked for update in this transaction; StoreError if unknown."""
    row = session.get(models.Incident, incident_id, with_for_update=True)
    if row is None:
        raise StoreError(
            f"there is no incident {incident_id}: `crisisctl incident list` shows ids."
        )
    return row


def append_event(
    session: Session,
    incident_id: int,
    kind: str,
    text: str,
    details: dict[str, Any] | None,
    source: str,
    author: str | None,
    at: datetime,
) -> models.Event:
    """Add one timeline row in `session` (the caller's transaction)."""
    row = models.Event(
        incident_id=incident_id,
        kind=kind,
        text=text,
        details=dict(details or {}),
        source=source,
        author=author if author is not None else default_author(),
        at=at,
        pinned=False,
    )
    session.add(row)
    session.flush()
    return row


def open_incident(
    db: Database,
    *,
    title: str,
    severity: Severity,
    service: str | None = None,
    dedup_key: str | None = None,
    source: str = "cli",
    author: str | None = None,
    details: dict[str, Any] | None = None,
    started_at: datetime | None = None,
    detected_at: datetime | None = None,
    summary: str | None = None,
) -> IncidentRecord:
    """Open an incident (status detected) and write its "opened" event.

    When an open incident (not resolved/closed) has the same `dedup_key`, that one is returned
    with ``reused=True`` and nothing is written. `started_at` (when the problem began) defaults
    to `detected_at`, which defaults to now.
    """
    title = check_text(title, "title")
    sev = parse_incident_severity(severity)
    key = dedup_key.strip() if dedup_key and dedup_key.strip() else None
    detected = aware(detected_at, "detection") if detected_at else utcnow()
    started = aware(started_at, "start") if started_at else detected
    if started > detected:
        raise StoreError(
            f"the incident cannot start ({iso(started)}) after it was detected ({iso(detected)})."
        )
    for _attempt in range(3):
        try:
            with db.transaction() as session:
                if key is not None:
                    existing = session.scalars(
                        select(models.Incident).where(models.Incident.open_dedup_key == key)
                    ).first()
                    if existing is not None:
                        return IncidentRecord.from_model(existing, reused=True)
                now = utcnow()
                row = models.Incident(
                    title=title,
                    service=service.strip() if service and service.strip() else None,
                    severity=sev.name,
                    status=Status.DETECTED.value,
                    escalation_level=1,
                    dedup_key=key,
                    open_dedup_key=key,
                    summary=summary,
                    started_at=started,
                    detected_at=detected,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                text = f"incident opened: {title} ({sev.name}, {sev.response_time})"
                append_event(session, row.id, EVENT_OPENED, text, details, source, author, detected)
                return IncidentRecord.from_model(row)
        except ConflictError:
            continue  # another process opened one with this key just now: return that one
    raise StoreError(f"could not open an incident for dedup key {key!r}; try again.")


def get_incident(db: Database, incident_id: int) -> IncidentRecord:
    """The incident with this id; StoreError if there is none."""
    with db.transaction() as session:
        row = session.get(models.Incident, incident_id)
        if row is None:
            raise StoreError(
                f"there is no incident {incident_id}: `crisisctl incident list` shows ids."
            )
        return IncidentRecord.from_model(row)


def list_incidents(
    db: Database,
    *,
    status: str | None = None,
    service: str | None = None,
    limit: int | None = None,
) -> list[IncidentRecord]:
    """Incidents, newest first; `status` is a status name, "open" (active) or "all"/None."""
    query = select(models.Incident).order_by(models.Incident.id.desc())
    if status and status != "all":
        if status == "open":
            query = query.where(models.Incident.status.in_([s.value for s in ACTIVE_STATUSES]))
        else:
            query = query.where(models.Incident.status == parse_status(status).value)
    if service:
        query = query.where(models.Incident.service == service)
    if limit is not None:
        query = query.limit(limit)
    with db.transaction() as session:
        return [IncidentRecord.from_model(row) for row in session.scalars(query)]


def add_event(
    db: Database,
    incident_id: int,
    *,
    kind: str,
    text: str,
    details: dict[str, Any] | None = None,
    source: str = "cli",
    author: str | None = None,
    at: datetime | None = None,
) -> EventRecord:
    """Append one event to the incident's timeline (kinds: lifecycle.EVENT_KINDS)."""
    if kind not in EVENT_KINDS:
        raise StoreError(f"unknown event kind {kind!r}: use one of {', '.join(EVENT_KINDS)}.")
    text = check_text(text, "event text", limit=10_000)
    when = aware(at, "event") if at else utcnow()
    with db.transaction() as session:
        touched = session.execute(
            update(models.Incident)
            .where(models.Incident.id == incident_id)
            .values(updated_at=utcnow())
        )
        if getattr(touched, "rowcount", 1) == 0:
            raise StoreError(
                f"there is no incident {incident_id}: `crisisctl incident list` shows ids."
            )
        row = append_event(session, incident_id, kind, text, details, source, author, when)
        return EventRecord.from_model(row)


def attach_report(
    db: Database,
    incident_id: int,
    report: dict[str, Any],
    *,
    source: str = "cli",
    author: str | None = None,
    label: str | None = None,
) -> EventRecord:
    """Attach a load / validate / triage JSON report as a timeline event with its figures.

    The report's top-level "report" field says what it is; `label` ("before" / "after") marks
    load reports for the post-mortem's before/after comparison.
    """
    kind, text, details = summarise_report(report, label=label)
    return add_event(
        db, incident_id, kind=kind, text=text, details=details, source=source, author=author
    )


def set_status(
    db: Database,
    incident_id: int,
    status: Status,
    *,
    at: datetime | None = None,
    source: str = "cli",
    author: str | None = None,
    note: str | None = None,
) -> IncidentRecord:
    """Move the incident to `status` (lifecycle rules), setting the milestones it implies."""
    when = aware(at, "status change") if at else utcnow()
    with db.transaction() as session:
        row = locked_incident(session, incident_id)
        current = Status(row.status)
        check_transition(current, status)
        if when < row.detected_at:
            raise StoreError(
                f"{iso(when)} is before the incident was detected ({iso(row.detected_at)})."
            )
        if status is Status.INVESTIGATING and current is Status.RESOLVED:
            row.resolved_at = None  # reopened: it is no longer resolved
        for column in milestones_reached(status):
            if getattr(row, column) is None:
                setattr(row, column, when)
        row.status = status.value
        if status in ACTIVE_STATUSES and row.open_dedup_key is None and row.dedup_key:
            taken = session.scalars(
                select(models.Incident.id).where(models.Incident.open_dedup_key == row.dedup_key)
            ).first()
            if taken is not None:
                raise StoreError(
                    f"incident {taken} is already open for dedup key {row.dedup_key!r}: "
                    "work on that one or resolve it first."
                )
        row.open_dedup_key = row.dedup_key if status in ACTIVE_STATUSES else None
        row.updated_at = utcnow()
        text = f"status {current} → {status}" + (f": {note}" if note else "")
        details = {"from": current.value, "to": status.value}
        append_event(session, row.id, EVENT_STATUS, text, details, source, author, when)
        session.flush()
        return IncidentRecord.from_model(row)


def resolve(
    db: Database,
    incident_id: int,
    *,
    at: datetime | None = None,
    source: str = "cli",
    author: str | None = None,
    note: str | None = None,
) -> IncidentRecord:
    """Mark the incident resolved (sets mitigated/acknowledged too if they were never set)."""
    return set_status(
        db, incident_id, Status.RESOLVED, at=at, source=source, author=author, note=note
    )


def set_severity(
    db: Database,
    incident_id: int,
    severity: Severity | str,
    *,
    source: str = "cli",
    author: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> IncidentRecord:
    """Change the severity (P0..P3) and record the change on the timeline (at `at`, default now)."""
    sev = parse_incident_severity(severity)
    when = aware(at, "severity change") if at else utcnow()
    with db.transaction() as session:
        row = locked_incident(session, incident_id)
        old = Severity[row.severity]
        if old is sev:
            raise StoreError(f"incident {incident_id} is already {sev.name}.")
        row.severity = sev.name
        row.updated_at = utcnow()
        word = "raised" if sev > old else "lowered"
        text = f"severity {word} {old.name} → {sev.name}" + (f": {reason}" if reason else "")
        details = {"from": old.name, "to": sev.name, "response_time": sev.response_time}
        append_event(session, row.id, EVENT_SEVERITY, text, details, source, author, when)
        session.flush()
        return IncidentRecord.from_model(row)


def escalate(
    db: Database,
    incident_id: int,
    *,
    level: int | None = None,
    source: str = "cli",
    author: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> IncidentRecord:
    """Raise the escalation level by one (or set `level`, 1..4) and record it (at `at`)."""
    when = aware(at, "escalation") if at else utcnow()
    with db.transaction() as session:
        row = locked_incident(session, incident_id)
        old = row.escalation_level
        if level is None:
            if old >= MAX_ESCALATION:
                raise StoreError(
                    f"incident {incident_id} is already at the highest escalation level "
                    f"({MAX_ESCALATION}, {ESCALATION_LEVELS[MAX_ESCALATION]})."
                )
            new = old + 1
        else:
            new = parse_escalation(level)
            if new == old:
                raise StoreError(f"incident {incident_id} is already at escalation level {new}.")
        row.escalation_level = new
        row.updated_at = utcnow()
        text = (
            f"escalation level {old} ({ESCALATION_LEVELS[old]}) → {new} ({ESCALATION_LEVELS[new]})"
            + (f": {reason}" if reason else "")
        )
        details = {"from": old, "to": new, "name": ESCALATION_LEVELS[new]}
        append_event(session, row.id, EVENT_ESCALATION, text, details, source, author, when)
        session.flush()
        return IncidentRecord.from_model(row)


def update_incident(
    db: Database,
    incident_id: int,
    changes: dict[str, Any],
    *,
    source: str = "cli",
    author: str | None = None,
) -> IncidentRecord:
    """Set descriptive fields (title, service, summary, roles, impact figures) and record them."""
    for name, value in changes.items():
        kind = UPDATABLE.get(name)
        if kind is None:
            raise StoreError(f"{name!r} cannot be set: use one of {', '.join(UPDATABLE)}.")
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise StoreError(f"{name} must be a {getattr(kind, '__name__', 'number')}.")
        if isinstance(value, int | float) and (value < 0 or value != value):
            raise StoreError(f"{name} must be a number ≥ 0, got {value!r}.")
    if "error_rate" in changes and changes["error_rate"] is not None and changes["error_rate"] > 1:
        raise StoreError("error_rate is a fraction between 0 and 1 (0.12 for 12 %).")
    if "title" in changes:
        changes = {**changes, "title": check_text(str(changes["title"]), "title")}
    if not changes:
        raise StoreError("nothing to change: give at least one field.")
    with db.transaction() as session:
        row = locked_incident(session, incident_id)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        shown = ", ".join(f"{k}={v}" for k, v in changes.items())
        append_event(
            session, row.id, EVENT_UPDATE, f"updated {shown}", changes, source, author, utcnow()
        )
        session.flush()
        return IncidentRecord.from_model(row)


def list_events(
    db: Database,
    incident_id: int,
    *,
    kinds: Iterable[str] | None = None,
    pinned: bool | None = None,
    source: str | None = None,
) -> list[EventRecord]:
    """The incident's timeline in time order, optionally filtered by kind, pin and source."""
    get_incident(db, incident_id)
    query = (
        select(models.Event)
        .where(models.Event.incident_id == incident_id)
        .order_by(models.Event.at, models.Event.id)
    )
    wanted = list(kinds or ())
    if wanted:
        query = query.where(models.Event.kind.in_(wanted))
    if pinned is not None:
        query = query.where(models.Event.pinned == pinned)
    if source:
        query = query.where(models.Event.source == source)
    with db.transaction() as session:
        return [EventRecord.from_model(row) for row in session.scalars(query)]


def pin_event(db: Database, incident_id: int, event_id: int, *, pinned: bool = True) -> EventRecord:
    """Pin (or unpin) one timeline event of the incident."""
    with db.transaction() as session:
        row = session.get(models.Event, event_id)
        if row is None or row.incident_id != incident_id:
            raise StoreError(f"incident {incident_id} has no timeline event {event_id}.")
        row.pinned = pinned
        session.flush()
        return EventRecord.from_model(row)
