"""`crisisctl alerts`: list watch's firing and recent alerts; silence and unsilence them.

Reads and writes the incident store (``--db URL``, default ``$CRISISCTL_DB``, else the user's
SQLite file), where `crisisctl watch` records every alert by fingerprint. A silenced alert is
still listed, but neither notifies nor runs runbook actions until its silence ends.
"""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from crisisctl.cli.incident import DB_HELP, opened
from crisisctl.cli.output import console, fail, print_json
from crisisctl.incidents.alerts import add_silence, end_silence, list_alerts, list_silences
from crisisctl.incidents.db import utcnow
from crisisctl.incidents.postmortem import format_timestamp
from crisisctl.incidents.records import iso
from crisisctl.units import parse_duration

app = typer.Typer(
    help="Watch's alerts: list firing and recent ones; silence and unsilence them.",
    invoke_without_command=True,
)

_db_opt = typer.Option(None, "--db", help=DB_HELP)
_json_opt = typer.Option(False, "--json", help="Print JSON on stdout.")


@app.callback()
def alerts(
    ctx: typer.Context,
    recent: str = typer.Option("24h", "--recent", help="Also list alerts seen within this."),
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many alerts."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """List firing alerts, then those seen recently (newest first)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        window = parse_duration(recent)
    except ValueError as exc:
        fail(str(exc))
    with opened(db) as database:
        rows = list_alerts(database, since=utcnow() - timedelta(seconds=window), limit=limit)
        firing = list_alerts(database, state="firing", limit=limit)
    seen = {r.fingerprint for r in firing}
    rows = firing + [r for r in rows if r.fingerprint not in seen]
    if json_out:
        print_json({"alerts": [r.to_dict() for r in rows[:limit]]})
        return
    if not rows:
        console.print(f"no firing alert, and none seen within {recent}.")
        return
    table = Table("state", "severity", "rule", "service", "labels", "since", "incident", "summary")
    for r in rows[:limit]:
        state = r.state + (f" (silenced #{r.silenced_by})" if r.silenced_by else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items()))
        table.add_row(
            state, r.severity, r.rule, r.service, labels, format_timestamp(iso(r.active_since)),
            f"#{r.incident_id}" if r.incident_id else "-", r.summary,
        )  # fmt: skip
    console.print(table)


def _matchers(labels: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in labels:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            fail(f"--label {text!r} is not NAME=VALUE: e.g. --label service=checkout.")
        out[name.strip()] = value.strip()
    return out


@app.command()
def silence(
    rule: str = typer.Option(None, "--rule", help="Silence this rule (default: any rule)."),
    label: list[str] = typer.Option([], "--label", help="NAME=VALUE the alert must carry."),
    duration: str = typer.Option(..., "--for", help="How long, e.g. 2h or 30m."),
    reason: str = typer.Option(..., "--reason", help="Why (shown with the silence)."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """Silence matching alerts until an end time: listed, but no notification or action."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(str(exc))
    with opened(db) as database:
        record = add_silence(
            database, rule=rule, matchers=_matchers(label),
            duration=timedelta(seconds=seconds), reason=reason,
        )  # fmt: skip
    if json_out:
        print_json(record.to_dict())
        return
    console.print(
        f"silence #{record.id} until {format_timestamp(iso(record.ends_at))}", highlight=False
    )


@app.command()
def unsilence(
    silence_id: int = typer.Argument(..., metavar="ID", help="The silence's id."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """End a silence now."""
    with opened(db) as database:
        record = end_silence(database, silence_id)
    if json_out:
        print_json(record.to_dict())
        return
    console.print(f"silence #{record.id} ended", highlight=False)


@app.command()
def silences(
    all_: bool = typer.Option(False, "--all", help="Include ended silences."),
    db: str = _db_opt,
    json_out: bool = _json_opt,
) -> None:
    """List the silences in force (or all of them)."""
    with opened(db) as database:
        rows = list_silences(database, include_ended=all_)
    if json_out:
        print_json({"silences": [r.to_dict() for r in rows]})
        return
    if not rows:
        console.print("no silence in force." if not all_ else "no silence.")
        return
    table = Table("id", "rule", "labels", "until", "author", "reason")
    for r in rows:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r.matchers.items()))
        table.add_row(
            str(r.id), r.rule or "(any)", labels or "-", format_timestamp(iso(r.ends_at)),
            r.author or "-", r.reason,
        )  # fmt: skip
    console.print(table)
