"""`crisisctl postmortem ID`: the incident's post-mortem as Markdown, HTML or JSON.

Generated from the stored incident only (deterministic; missing data is stated as missing).
``--out FILE`` writes it to a file (the format follows the file's suffix unless ``--format``
says otherwise); without it the document goes to stdout.
"""

from __future__ import annotations

from pathlib import Path

import typer

from crisisctl.cli.incident import DB_HELP, opened
from crisisctl.cli.output import err_console, fail
from crisisctl.incidents.followups import get_detail
from crisisctl.incidents.postmortem import FORMATS, build_postmortem, render

_SUFFIXES = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}


def postmortem(
    incident_id: int = typer.Argument(..., help="Incident id."),
    fmt: str = typer.Option(
        None, "--format", help="md, html or json (default: from --out's suffix, else md)."
    ),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Generate the post-mortem of an incident from its stored data."""
    chosen = fmt or (_SUFFIXES.get(out.suffix.lower()) if out is not None else None) or "md"
    if chosen not in FORMATS:
        fail(f"unknown format {chosen!r}: use md, html or json.")
    with opened(db) as database:
        document = build_postmortem(get_detail(database, incident_id))
    text = render(document, chosen)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"could not write the post-mortem to {out} ({exc.strerror or exc}).")
    err_console.print(f"wrote the {chosen} post-mortem of incident {incident_id} to {out}")
