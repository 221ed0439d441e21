"""`crisisctl incident …`: open, follow, change and close incidents in the incident store.

Every command takes ``--db URL`` (default ``$CRISISCTL_DB``, else a SQLite file under the user
data dir). Unknown ids, invalid transitions and bad values are one-sentence errors with exit
code 2. Reporting commands have ``--json``. Times given on the command line are ISO 8601; a time
without a zone is taken as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from crisisctl.cli.output import console, err_console, fail, print_json
from crisisctl.incidents import followups, store
from crisisctl.incidents.db import Database, StoreError, open_database
from crisisctl.incidents.lifecycle import (
    LESSON_KINDS,
    LOGGABLE_KINDS,
    format_duration,
    parse_due_date,
    parse_incident_severity,
    parse_status,
)
from crisisctl.incidents.notify import TEMPLATES, compose, deliver
from crisisctl.incidents.postmortem import format_timestamp
from crisisctl.incidents.records import IncidentDetail, IncidentRecord, iso
from crisisctl.incidents.reports import fmt_ms, fmt_pct
from crisisctl.units import parse_duration

app = typer.Typer(
    help="Incidents: open, log, change status/severity/escalation, attach reports, notify.",
    no_args_is_help=True,
)
action_app = typer.Typer(help="Action items of an incident.", no_args_is_help=True)
app.add_typer(action_app, name="action")

DB_HELP = "Database URL (sqlite:///file.db or postgresql://…); default $CRISISCTL_DB."
_db_opt = typer.Option(None, "--db", help=DB_HELP)
_json_opt = typer.Option(False, "--json", help="Print JSON on stdout.")


@contextmanager
def opened(url: str | None) -> Iterator[Database]:
    """The open store; any StoreError becomes a one-sentence error with exit code 2."""
    try:
        database = open_database(url)
    except StoreError as exc:
        fail(str(exc))
    try:
        yield database
    except StoreError as exc:
        fail(str(exc))
    finally:
        database.close()


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time (naive means UTC); None for None; exit 2 when unreadable."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"{text!r} is not an ISO 8601 time: use e.g. 2025-11-23T14:05:00Z.")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _done(record: IncidentRecord, message: str, json_out: bool) -> None:
    if json_out:
        print_json(record.to_dict())
    else:
        console.print(message, highlight=False)


# -- open / list / show ---------------------------------------------------------------------------
@app.command("open")
def open_cmd(
    title: str = typer.Option(..., "--title", help="What is wrong, in a few words."),
    severity: str = typer.Option(..., "--severity", help="P0, P1, P2 or P3."),
    service: str = typer.Option(None, "--service", help="The affected service."),
    dedup_key: str = typer.Option(
        None, "--dedup-key", help="Reuse the open incident with this key instead of a new one."
    ),
    started: str = typer.Option(None, "--started", help="When the problem began (ISO 8601)."),
    detected: str = typer.Option(None, "--detected", help="When it was detected (default now)."),
    summary: str = typer.Option(None, "--summary", help="One-paragraph summary."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Open an incident and print its id."""
    with opened(db) as database:
        record = store.open_incident(
            database,
            title=title,
            severity=parse_incident_severity(severity),
            service=service,
            dedup_key=dedup_key,
            started_at=parse_time(started),
            detected_at=parse_time(detected),
            summary=summary,
        )
    if json_out:
        print_json({**record.to_dict(), "reused": record.reused})
        return
    typer.echo(record.id)
    what = "reused open incident" if record.reused else "opened incident"
    err_console.print(
        f"{what} {record.id} ({record.severity.name}, respond {record.severity.response_time})",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    status: str = typer.Option("all", "--status", help="open, all, or one status name."),
    service: str = typer.Option(None, "--service", help="Only this service."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many (newest first)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """List incidents, newest first."""
    with opened(db) as database:
        records = store.list_incidents(database, status=status, service=service, limit=limit)
    if json_out:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print("no incidents match.")
        return
    table = Table("id", "sev", "status", "esc", "service", "title", "detected (UTC)", "age")
    for r in records:
        end = r.resolved_at or datetime.now(UTC)
        table.add_row(
            str(r.id), r.severity.name, str(r.status), str(r.escalation_level),
            r.service or "-", r.title, format_timestamp(iso(r.detected_at)),
            format_duration(end - r.started_at),
        )  # fmt: skip
    console.print(table)


def render_detail(detail: IncidentDetail) -> None:
    """The human view of one incident."""
    inc = detail.incident
    imp = inc.impact
    console.print(
        f"[bold]incident {inc.id}[/]: {inc.title}\n"
        f"{inc.severity.name} ({inc.severity.label}, respond {inc.severity.response_time}) · "
        f"{inc.status} · escalation {inc.escalation_level} · service {inc.service or '-'}",
        highlight=False,
    )
    roles = (
        f"commander {inc.commander or '-'}, scribe {inc.scribe or '-'}, comms {inc.comms or '-'}"
    )
    console.print(f"roles: {roles}", highlight=False)
    times = Table("milestone", "time (UTC)", "measure", "value")
    mttx = list(inc.mttx.items())
    stamps = [
        ("started", inc.started_at), ("detected", inc.detected_at),
        ("acknowledged", inc.acknowledged_at), ("mitigated", inc.mitigated_at),
        ("resolved", inc.resolved_at),
    ]  # fmt: skip
    for index, (name, value) in enumerate(stamps):
        what, took = mttx[index - 1] if index >= 1 else ("", None)
        shown = format_duration(took) if what else ""
        times.add_row(name, format_timestamp(iso(value)), what.replace("_", " "), shown)
    console.print(times)
    factor = "n/a" if imp.factor is None else f"{imp.factor:.1f}×"
    console.print(
        f"impact: peak {fmt_ms(imp.peak_latency_ms)}, baseline {fmt_ms(imp.baseline_latency_ms)}, "
        f"factor {factor}, errors {fmt_pct(imp.error_rate)}, "
        f"requests {imp.affected_requests if imp.affected_requests is not None else 'n/a'}, "
        f"users {imp.affected_users if imp.affected_users is not None else 'n/a'}",
        highlight=False,
    )
    timeline = Table("#", "time (UTC)", "kind", "source", "author", "text", title="timeline")
    for e in detail.events:
        timeline.add_row(
            f"{e.id}{'*' if e.pinned else ''}", format_timestamp(iso(e.at)), e.kind, e.source,
            e.author or "-", e.text,
        )  # fmt: skip
    console.print(timeline)
    if detail.actions:
        actions = Table(
            "#", "action", "kind", "priority", "owner", "due", "status", title="actions"
        )
        for a in detail.actions:
            actions.add_row(
                str(a.id), a.title, a.kind, a.priority, a.owner or "-",
                a.due_date.isoformat() if a.due_date else "-", a.status,
            )  # fmt: skip
        console.print(actions)
    for c in detail.root_causes:
        console.print(f"root cause ({c.category}): {c.cause}", highlight=False)
    for lesson in detail.lessons:
        console.print(f"lesson ({lesson.kind.replace('_', ' ')}): {lesson.text}", highlight=False)


@app.command("show")
def show_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Show an incident: milestones and MTTx, impact, timeline, actions, causes, lessons."""
    with opened(db) as database:
        detail = followups.get_detail(database, incident_id)
    if json_out:
        print_json(detail.to_dict())
    else:
        render_detail(detail)


# -- timeline ----------------------------------------------------------------------------------
@app.command("log")
def log_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    text: str = typer.Argument(..., help="What happened or what was done."),
    kind: str = typer.Option("note", "--kind", help=f"One of {', '.join(LOGGABLE_KINDS)}."),
    source: str = typer.Option("cli", "--source", help="Who or what logs this."),
    pin: bool = typer.Option(False, "--pin", help="Pin the event."),
    at: str = typer.Option(None, "--at", help="When it happened (default now)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Append an event (a note, an action taken, …) to the incident's timeline."""
    if kind not in LOGGABLE_KINDS:
        fail(f"unknown kind {kind!r}: use one of {', '.join(LOGGABLE_KINDS)}.")
    with opened(db) as database:
        event = store.add_event(
            database, incident_id, kind=kind, text=text, source=source, at=parse_time(at)
        )
        if pin:
            event = store.pin_event(database, incident_id, event.id)
    if json_out:
        print_json(event.to_dict())
    else:
        console.print(f"logged event {event.id} on incident {incident_id}", highlight=False)


@app.command("timeline")
def timeline_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    kind: list[str] = typer.Option(None, "--kind", help="Only these kinds (repeatable)."),
    pinned: bool = typer.Option(False, "--pinned", help="Only pinned events."),
    source: str = typer.Option(None, "--source", help="Only events from this source."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """The incident's timeline, optionally filtered."""
    with opened(db) as database:
        events = store.list_events(
            database, incident_id, kinds=kind or None, pinned=True if pinned else None,
            source=source,
        )  # fmt: skip
    if json_out:
        print_json([e.to_dict() for e in events])
        return
    table = Table("#", "time (UTC)", "kind", "source", "author", "text")
    for e in events:
        table.add_row(
            f"{e.id}{'*' if e.pinned else ''}", format_timestamp(iso(e.at)), e.kind, e.source,
            e.author or "-", e.text,
        )  # fmt: skip
    console.print(table)


@app.command("pin")
def pin_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    event_id: int = typer.Argument(..., help="Timeline event id."),
    unpin: bool = typer.Option(False, "--unpin", help="Remove the pin instead."),
    db: str = _db_opt,
) -> None:
    """Pin (or unpin) a timeline event."""
    with opened(db) as database:
        store.pin_event(database, incident_id, event_id, pinned=not unpin)
    console.print(f"event {event_id} {'unpinned' if unpin else 'pinned'}", highlight=False)


@app.command("attach")
def attach_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    report: Path = typer.Argument(..., help="A load, validate or triage JSON report."),
    label: str = typer.Option(None, "--label", help="before or after (load reports)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Attach a JSON report as a timeline event with its figures."""
    try:
        data: Any = json.loads(report.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"could not read {report} ({exc.strerror or exc}).")
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"{report} is not valid JSON ({exc}).")
    with opened(db) as database:
        event = store.attach_report(database, incident_id, data, label=label)
    if json_out:
        print_json(event.to_dict())
    else:
        console.print(f"event {event.id}: {event.text}", highlight=False)


# -- lifecycle -----------------------------------------------------------------------------------
@app.command("status")
def status_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    status: str = typer.Argument(..., help="investigating, stabilizing, mitigated, resolved, …"),
    at: str = typer.Option(None, "--at", help="When it happened (default now)."),
    note: str = typer.Option(None, "--note", help="Why."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Move the incident along its lifecycle."""
    with opened(db) as database:
        target = parse_status(status)
        record = store.set_status(database, incident_id, target, at=parse_time(at), note=note)
    _done(record, f"incident {incident_id} is now {record.status}", json_out)


@app.command("resolve")
def resolve_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    at: str = typer.Option(None, "--at", help="When it was resolved (default now)."),
    note: str = typer.Option(None, "--note", help="How."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Mark the incident resolved."""
    with opened(db) as database:
        record = store.resolve(database, incident_id, at=parse_time(at), note=note)
    took = format_duration(record.mttx["time_to_resolve"])
    _done(record, f"incident {incident_id} resolved {took} after it started", json_out)


@app.command("severity")
def severity_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    severity: str = typer.Argument(..., help="P0, P1, P2 or P3."),
    reason: str = typer.Option(None, "--reason", help="Why."),
    at: str = typer.Option(None, "--at", help="When it changed (default now)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Change the incident's severity."""
    with opened(db) as database:
        record = store.set_severity(
            database, incident_id, severity, reason=reason, at=parse_time(at)
        )
    message = f"incident {incident_id} is now {record.severity.name} ({record.severity.label})"
    _done(record, message, json_out)


@app.command("escalate")
def escalate_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    level: int = typer.Option(None, "--level", help="Set this level (1-4) instead of +1."),
    reason: str = typer.Option(None, "--reason", help="Why."),
    at: str = typer.Option(None, "--at", help="When (default now)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Escalate: 1 automatic recovery → 2 manual intervention → 3 rollback → 4 full recovery."""
    with opened(db) as database:
        record = store.escalate(
            database, incident_id, level=level, reason=reason, at=parse_time(at)
        )
    message = f"incident {incident_id} is at escalation level {record.escalation_level}"
    _done(record, message, json_out)


@app.command("set")
def set_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    title: str = typer.Option(None, "--title"),
    service: str = typer.Option(None, "--service"),
    summary: str = typer.Option(None, "--summary", help="Summary for the post-mortem."),
    commander: str = typer.Option(None, "--commander", help="Incident commander."),
    scribe: str = typer.Option(None, "--scribe"),
    comms: str = typer.Option(None, "--comms", help="Communications lead."),
    peak_ms: float = typer.Option(None, "--peak-latency-ms", help="Peak latency (ms)."),
    baseline_ms: float = typer.Option(None, "--baseline-latency-ms", help="Normal latency (ms)."),
    factor: float = typer.Option(None, "--degradation-factor", help="Default: peak ÷ baseline."),
    error_rate: float = typer.Option(None, "--error-rate", help="Fraction 0..1 (0.12 = 12 %)."),
    requests: int = typer.Option(None, "--affected-requests"),
    users: int = typer.Option(None, "--affected-users"),
    downtime: str = typer.Option(None, "--downtime", help="e.g. 12m, 90s."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Set roles, summary and impact figures."""
    changes: dict[str, Any] = {
        "title": title, "service": service, "summary": summary, "commander": commander,
        "scribe": scribe, "comms": comms, "peak_latency_ms": peak_ms,
        "baseline_latency_ms": baseline_ms, "degradation_factor": factor,
        "error_rate": error_rate, "affected_requests": requests, "affected_users": users,
    }  # fmt: skip
    if downtime is not None:
        try:
            changes["downtime_ms"] = parse_duration(downtime) * 1000.0
        except ValueError as exc:
            fail(str(exc))
    changes = {k: v for k, v in changes.items() if v is not None}
    with opened(db) as database:
        record = store.update_incident(database, incident_id, changes)
    _done(record, f"incident {incident_id} updated: {', '.join(changes)}", json_out)


@app.command("cause")
def cause_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    cause: str = typer.Argument(..., help="The root cause in one sentence."),
    category: str = typer.Option(..., "--category", help='e.g. "Resource Management".'),
    evidence: list[str] = typer.Option(None, "--evidence", help="Evidence (repeatable)."),
    db: str = _db_opt,
) -> None:
    """Record a root cause with its evidence."""
    with opened(db) as database:
        row = followups.add_root_cause(
            database, incident_id, category=category, cause=cause, evidence=evidence or []
        )
    console.print(f"root cause {row.id} recorded on incident {incident_id}", highlight=False)


@app.command("lesson")
def lesson_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    kind: str = typer.Argument(..., help="went-well, went-wrong or got-lucky."),
    text: str = typer.Argument(..., help="The lesson."),
    db: str = _db_opt,
) -> None:
    """Record a lesson learned."""
    with opened(db) as database:
        row = followups.add_lesson(database, incident_id, kind=kind, text=text)
    console.print(
        f"lesson {row.id} ({row.kind}) recorded; kinds: {', '.join(LESSON_KINDS)}",
        highlight=False,
    )


# -- action items --------------------------------------------------------------------------------
@action_app.command("add")
def action_add(
    incident_id: int = typer.Argument(..., help="Incident id."),
    title: str = typer.Argument(..., help="What must be done."),
    kind: str = typer.Option("prevent", "--kind", help="mitigate, prevent or process."),
    owner: str = typer.Option(None, "--owner"),
    due: str = typer.Option(None, "--due", help="Due date YYYY-MM-DD."),
    priority: str = typer.Option("medium", "--priority", help="high, medium or low."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Add an action item."""
    with opened(db) as database:
        item = followups.add_action(
            database, incident_id, title=title, kind=kind, owner=owner, priority=priority,
            due_date=parse_due_date(due) if due else None,
        )  # fmt: skip
    if json_out:
        print_json(item.to_dict())
    else:
        console.print(f"action item {item.id} added to incident {incident_id}", highlight=False)


@action_app.command("update")
def action_update(
    action_id: int = typer.Argument(..., help="Action item id."),
    status: str = typer.Option(None, "--status", help="open, in_progress, done or cancelled."),
    owner: str = typer.Option(None, "--owner"),
    due: str = typer.Option(None, "--due", help="Due date YYYY-MM-DD."),
    priority: str = typer.Option(None, "--priority", help="high, medium or low."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Change an action item's status, owner, due date or priority."""
    with opened(db) as database:
        item = followups.update_action(
            database, action_id, status=status, owner=owner, priority=priority,
            due_date=parse_due_date(due) if due else None,
        )  # fmt: skip
    if json_out:
        print_json(item.to_dict())
    else:
        console.print(f"action item {item.id}: {item.status}", highlight=False)


# -- communication ------------------------------------------------------------------------------
@app.command("notify")
def notify_cmd(
    incident_id: int = typer.Argument(..., help="Incident id."),
    template: str = typer.Option("internal", "--template", help=" or ".join(TEMPLATES) + "."),
    to: list[str] = typer.Option(
        None, "--to", help="apprise URL, e.g. slack://…, mailto://…, json://host/path (repeatable)."
    ),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Render a communication template from the incident; send it via apprise or print it."""
    urls = list(to or [])
    with opened(db) as database:
        message = compose(followups.get_detail(database, incident_id), template)
        if urls:
            deliver(message, urls)
            store.add_event(
                database, incident_id, kind="note",
                text=f"{template} notification sent to {len(urls)} target(s): {message.title}",
                details={"template": template, "targets": len(urls)},
            )  # fmt: skip
    if json_out:
        print_json({**message.to_dict(), "sent_to": len(urls)})
    elif urls:
        console.print(f"sent {template} notification to {len(urls)} target(s)", highlight=False)
    else:
        typer.echo(f"{message.title}\n\n{message.body}", nl=False)
