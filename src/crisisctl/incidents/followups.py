"""Learning from an incident: action items, root causes, lessons, and the full detail view.

Service functions like those of `store`: the Database first, one transaction per call, frozen
records out. Adding any of these also writes a timeline event, so the timeline tells the story.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select

from crisisctl.incidents import models
from crisisctl.incidents.db import Database, StoreError, utcnow
from crisisctl.incidents.lifecycle import (
    ACTION_KINDS,
    ACTION_PRIORITIES,
    ACTION_STATUSES,
    EVENT_UPDATE,
    LESSON_KINDS,
    choose,
)
from crisisctl.incidents.records import (
    ActionItemRecord,
    EventRecord,
    IncidentDetail,
    IncidentRecord,
    LessonRecord,
    RootCauseRecord,
)
from crisisctl.incidents.store import append_event, check_text, default_author, locked_incident


def add_action(
    db: Database,
    incident_id: int,
    *,
    title: str,
    kind: str = "prevent",
    owner: str | None = None,
    due_date: date | None = None,
    priority: str = "medium",
    source: str = "cli",
    author: str | None = None,
) -> ActionItemRecord:
    """Add an action item (kind mitigate / prevent / process; priority high / medium / low)."""
    title = check_text(title, "action item title")
    kind = choose(kind, ACTION_KINDS, "action item kind")
    priority = choose(priority, ACTION_PRIORITIES, "priority")
    now = utcnow()
    with db.transaction() as session:
        incident = locked_incident(session, incident_id)
        row = models.ActionItem(
            incident_id=incident.id,
            title=title,
            kind=kind,
            owner=owner.strip() if owner and owner.strip() else None,
            due_date=due_date,
            priority=priority,
            status="open",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        who = f", owner {row.owner}" if row.owner else ""
        due = f", due {due_date.isoformat()}" if due_date else ""
        text = f"action item #{row.id} added ({kind}, {priority}{who}{due}): {title}"
        append_event(
            session, incident.id, EVENT_UPDATE, text, {"action_item": row.id}, source, author, now
        )
        return ActionItemRecord.from_model(row)


def update_action(
    db: Database,
    action_id: int,
    *,
    status: str | None = None,
    owner: str | None = None,
    due_date: date | None = None,
    priority: str | None = None,
    source: str = "cli",
    author: str | None = None,
) -> ActionItemRecord:
    """Change an action item's status (open / in_progress / done / cancelled), owner, due date
    or priority."""
    changes: dict[str, Any] = {}
    if status is not None:
        changes["status"] = choose(status, ACTION_STATUSES, "action item status")
    if priority is not None:
        changes["priority"] = choose(priority, ACTION_PRIORITIES, "priority")
    if owner is not None:
        changes["owner"] = owner.strip() or None
    if due_date is not None:
        changes["due_date"] = due_date
    if not changes:
        raise StoreError("nothing to change: give --status, --owner, --due or --priority.")
    now = utcnow()
    with db.transaction() as session:
        row = session.get(models.ActionItem, action_id, with_for_update=True)
        if row is None:
            raise StoreError(f"there is no action item {action_id}: `incident show ID` lists them.")
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = now
        if "status" in changes:
            row.completed_at = now if changes["status"] == "done" else None
        shown = ", ".join(f"{k} {v}" for k, v in changes.items())
        text = f"action item #{row.id} updated: {shown}"
        details = {"action_item": row.id, **{k: str(v) for k, v in changes.items()}}
        append_event(session, row.incident_id, EVENT_UPDATE, text, details, source, author, now)
        session.flush()
        return ActionItemRecord.from_model(row)


def add_root_cause(
    db: Database,
    incident_id: int,
    *,
    category: str,
    cause: str,
    evidence: Sequence[str] = (),
    source: str = "cli",
    author: str | None = None,
) -> RootCauseRecord:
    """Record a root cause: category (e.g. "Resource Management"), the cause, its evidence."""
    category = check_text(category, "root cause category", limit=100)
    cause = check_text(cause, "root cause", limit=5000)
    proof = [e.strip() for e in evidence if e.strip()]
    now = utcnow()
    with db.transaction() as session:
        incident = locked_incident(session, incident_id)
        row = models.RootCause(
            incident_id=incident.id,
            category=category,
            cause=cause,
            evidence=proof,
            author=author if author is not None else default_author(),
            created_at=now,
        )
        session.add(row)
        session.flush()
        text = f"root cause ({category}): {cause}"
        append_event(
            session, incident.id, EVENT_UPDATE, text, {"root_cause": row.id}, source, author, now
        )
        return RootCauseRecord.from_model(row)


def add_lesson(
    db: Database,
    incident_id: int,
    *,
    kind: str,
    text: str,
    source: str = "cli",
    author: str | None = None,
) -> LessonRecord:
    """Record a lesson: kind went_well, went_wrong or got_lucky."""
    kind = choose(kind, LESSON_KINDS, "lesson kind")
    text = check_text(text, "lesson", limit=5000)
    now = utcnow()
    with db.transaction() as session:
        incident = locked_incident(session, incident_id)
        row = models.Lesson(
            incident_id=incident.id,
            kind=kind,
            text=text,
            author=author if author is not None else default_author(),
            created_at=now,
        )
        session.add(row)
        session.flush()
        note = f"lesson ({kind.replace('_', ' ')}): {text}"
        append_event(
            session, incident.id, EVENT_UPDATE, note, {"lesson": row.id}, source, author, now
        )
        return LessonRecord.from_model(row)


def get_detail(db: Database, incident_id: int) -> IncidentDetail:
    """The incident with its timeline, action items, root causes and lessons (one snapshot)."""
    with db.transaction() as session:
        row = session.get(models.Incident, incident_id)
        if row is None:
            raise StoreError(
                f"there is no incident {incident_id}: `crisisctl incident list` shows ids."
            )

        def rows(model: Any, order: Any) -> Any:
            return session.scalars(
                select(model).where(model.incident_id == incident_id).order_by(*order)
            )

        return IncidentDetail(
            incident=IncidentRecord.from_model(row),
            events=tuple(
                EventRecord.from_model(e)
                for e in rows(models.Event, (models.Event.at, models.Event.id))
            ),
            actions=tuple(
                ActionItemRecord.from_model(a)
                for a in rows(models.ActionItem, (models.ActionItem.id,))
            ),
            root_causes=tuple(
                RootCauseRecord.from_model(c)
                for c in rows(models.RootCause, (models.RootCause.id,))
            ),
            lessons=tuple(
                LessonRecord.from_model(x) for x in rows(models.Lesson, (models.Lesson.id,))
            ),
        )
