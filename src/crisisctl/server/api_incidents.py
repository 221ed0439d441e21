"""Incidents over HTTP: the same service functions as ``crisisctl incident`` on the same store.

Reads: the list, one incident (timeline, MTTx, escalation, action items, attached reports),
a stored report, the post-mortem as HTML. Changes (operators; CSRF for sessions): ack (→
investigating), note, status, escalate, resolve (with an optional summary). Each change is
written by the store with ``source="serve"`` and ``author`` = the signed-in name, then the
runtime publishes the ``incident`` and ``timeline`` events. Store calls run in worker threads.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from crisisctl.incidents import store
from crisisctl.incidents.db import Database, StoreError
from crisisctl.incidents.followups import get_detail
from crisisctl.incidents.lifecycle import (
    EVENT_LOAD_REPORT,
    EVENT_NOTE,
    EVENT_TRIAGE,
    EVENT_VALIDATION,
    Status,
    parse_status,
)
from crisisctl.incidents.postmortem import build_postmortem, render
from crisisctl.incidents.records import EventRecord, IncidentDetail, ms
from crisisctl.server.deps import ERRORS, ApiError, Operator, Runtime, Viewer
from crisisctl.server.schemas import (
    Error,
    Escalation,
    Incident,
    Note,
    Report,
    Resolution,
    StatusChange,
    TimelineEntry,
)
from crisisctl.server.schemas import IncidentDetail as DetailModel

__all__ = ["REPORT_KINDS", "SOURCE", "router"]

router = APIRouter(prefix="/api/incidents", tags=["incidents"])
SOURCE = "serve"
#: timeline kinds that hold a report, and the report kind each is
REPORT_KINDS = {EVENT_LOAD_REPORT: "load", EVENT_VALIDATION: "validate", EVENT_TRIAGE: "triage"}
_MISSING = {**ERRORS, 404: {"model": Error}}
#: a row id (the store's integers: SQLite and PostgreSQL bigint hold up to 2⁶³ − 1)
RowId = Annotated[int, Path(ge=1, le=2**53)]
IncidentId = RowId
_CHANGE = {**_MISSING, 409: {"model": Error}}


def _db(runtime: Any) -> Database:
    if runtime.db is None:
        raise ApiError(503, "the incident store is not open yet: try again in a moment.")
    db: Database = runtime.db
    return db


def _report_ref(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": REPORT_KINDS[event.kind],
        "title": event.text,
        "at": event.to_dict()["at"],
    }


def detail_document(detail: IncidentDetail) -> dict[str, Any]:
    """An incident with its timeline, MTTx (ms), action items and report references."""
    record = detail.incident
    return {
        **record.to_dict(),
        "timeline": [e.to_dict() for e in detail.events],
        "mttx": {f"{name}_ms": ms(value) for name, value in record.mttx.items()},
        "action_items": [a.to_dict() for a in detail.actions],
        "reports": [_report_ref(e) for e in detail.events if e.kind in REPORT_KINDS],
    }


@router.get("", response_model=list[Incident], responses=ERRORS)
async def list_incidents(
    who: Viewer,
    runtime: Runtime,
    status: Annotated[str, Query(max_length=32)] = "open",
    service: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Incidents, newest first: ``status`` is open, all, or one status name."""
    if status not in ("open", "all"):
        try:
            parse_status(status)
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None
    records = await asyncio.to_thread(
        store.list_incidents, _db(runtime), status=status, service=service, limit=limit
    )
    return [r.to_dict() for r in records]


@router.get("/{incident_id}", response_model=DetailModel, responses=_MISSING)
async def show(incident_id: IncidentId, who: Viewer, runtime: Runtime) -> dict[str, Any]:
    """One incident with its timeline, MTTx, escalation level, action items and reports."""
    detail = await asyncio.to_thread(get_detail, _db(runtime), incident_id)
    return detail_document(detail)


@router.get(
    "/{incident_id}/postmortem",
    response_class=HTMLResponse,
    responses={**_MISSING, 200: {"content": {"text/html": {}}}},
)
async def postmortem(incident_id: IncidentId, who: Viewer, runtime: Runtime) -> HTMLResponse:
    """The incident's post-mortem (self-contained HTML), generated from the store."""
    detail = await asyncio.to_thread(get_detail, _db(runtime), incident_id)
    return HTMLResponse(render(build_postmortem(detail), "html"))


@router.get("/{incident_id}/reports/{report_id}", response_model=Report, responses=_MISSING)
async def report(
    incident_id: IncidentId, report_id: RowId, who: Viewer, runtime: Runtime
) -> Report:
    """A load, validation or triage report stored on the incident, with its series."""
    events = await asyncio.to_thread(store.list_events, _db(runtime), incident_id)
    for event in events:
        if event.id == report_id and event.kind in REPORT_KINDS:
            kind: Literal["load", "validate", "triage"] = REPORT_KINDS[event.kind]  # type: ignore[assignment]
            return Report(
                id=event.id, incident_id=incident_id, kind=kind, title=event.text,
                at=event.to_dict()["at"], author=event.author, report=event.details,
            )  # fmt: skip
    raise ApiError(404, f"incident {incident_id} has no report {report_id}.")


async def _changed(runtime: Any, record_or_event: Any) -> Any:
    await runtime.sync_incidents()
    return record_or_event.to_dict()


@router.post("/{incident_id}/ack", response_model=Incident, responses=_CHANGE)
async def ack(incident_id: IncidentId, who: Operator, runtime: Runtime) -> Any:
    """Acknowledge: a detected incident moves to investigating (MTTA stops)."""
    db = _db(runtime)
    current = await asyncio.to_thread(store.get_incident, db, incident_id)
    if current.acknowledged_at is not None:
        raise ApiError(409, f"incident {incident_id} is already acknowledged.")
    record = await asyncio.to_thread(
        store.set_status, db, incident_id, Status.INVESTIGATING, source=SOURCE, author=who.name,
        note="acknowledged",
    )  # fmt: skip
    return await _changed(runtime, record)


@router.post("/{incident_id}/note", response_model=TimelineEntry, responses=_CHANGE)
async def note(incident_id: IncidentId, body: Note, who: Operator, runtime: Runtime) -> Any:
    """Add a note to the timeline."""
    event = await asyncio.to_thread(
        store.add_event, _db(runtime), incident_id, kind=EVENT_NOTE, text=body.text,
        source=SOURCE, author=who.name,
    )  # fmt: skip
    return await _changed(runtime, event)


@router.post("/{incident_id}/status", response_model=Incident, responses=_CHANGE)
async def set_status(
    incident_id: IncidentId, body: StatusChange, who: Operator, runtime: Runtime
) -> Any:
    """Move the incident along its lifecycle (the CLI's rules)."""
    try:
        target = parse_status(body.status)
    except StoreError as exc:
        raise ApiError(422, str(exc)) from None
    record = await asyncio.to_thread(
        store.set_status, _db(runtime), incident_id, target, source=SOURCE, author=who.name,
        note=body.note,
    )  # fmt: skip
    return await _changed(runtime, record)


@router.post("/{incident_id}/escalate", response_model=Incident, responses=_CHANGE)
async def escalate(
    incident_id: IncidentId, who: Operator, runtime: Runtime, body: Escalation | None = None
) -> Any:
    """Escalate one level (or to ``level``)."""
    body = body or Escalation()
    record = await asyncio.to_thread(
        store.escalate, _db(runtime), incident_id, level=body.level, source=SOURCE,
        author=who.name, reason=body.reason,
    )  # fmt: skip
    return await _changed(runtime, record)


@router.post("/{incident_id}/resolve", response_model=Incident, responses=_CHANGE)
async def resolve(
    incident_id: IncidentId, who: Operator, runtime: Runtime, body: Resolution | None = None
) -> Any:
    """Resolve (with an optional summary for the post-mortem)."""
    db = _db(runtime)
    summary = (body.summary or "").strip() if body else ""
    current = await asyncio.to_thread(store.get_incident, db, incident_id)
    if not current.is_open:  # checked first: a refused resolve must not change the summary
        raise ApiError(409, f"incident {incident_id} is already {current.status}.")
    if summary:
        await asyncio.to_thread(
            store.update_incident, db, incident_id, {"summary": summary}, source=SOURCE,
            author=who.name,
        )  # fmt: skip
    record = await asyncio.to_thread(store.resolve, db, incident_id, source=SOURCE, author=who.name)
    return await _changed(runtime, record)
