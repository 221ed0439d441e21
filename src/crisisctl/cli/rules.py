"""`crisisctl rules generate`: a watch file's rules as Prometheus rules, their promtool tests,
Alertmanager and scrape configuration and a Grafana dashboard (``watch.promfiles``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crisisctl.cli.output import console, err_console, fail, print_json
from crisisctl.watch.config import WatchConfig, WatchFileError, load_watch_file
from crisisctl.watch.promconfig import SECRETS_DIR, IntakeTarget
from crisisctl.watch.promfiles import write_files

app = typer.Typer(
    help="Prometheus-native output of a watch file: rules, promtool tests, configs, dashboard.",
    no_args_is_help=True,
)


@app.callback()
def rules() -> None:
    """Prometheus-native output of a watch file: rules, promtool tests, configs, dashboard."""


def _load(path: Path) -> WatchConfig:
    try:
        return load_watch_file(path)
    except WatchFileError as exc:
        fail(str(exc))  # (one problem or several, one per line)


@app.command()
def generate(
    file: Annotated[Path, typer.Argument(help="The watch file (YAML) `crisisctl watch` reads.")],
    out: Annotated[Path, typer.Option("--out", help="The directory to write the files into.")],
    intake: Annotated[
        str,
        typer.Option(
            "--intake",
            help="crisisctl's Alertmanager intake: the `crisisctl watch --listen` address as a "
            "URL (the path /api/v1/alertmanager is added).",
        ),
    ] = IntakeTarget.url,
    intake_auth: Annotated[
        str, typer.Option("--intake-auth", help="How Alertmanager proves itself: bearer or basic.")
    ] = IntakeTarget.auth,
    intake_credentials_file: Annotated[
        str,
        typer.Option(
            "--intake-credentials-file",
            help="The file Alertmanager reads the intake's token (or basic password) from.",
        ),
    ] = IntakeTarget.credentials_file,
    secrets_dir: Annotated[
        str,
        typer.Option(
            "--secrets-dir",
            help="Where Prometheus reads each guard token from (a file named after its env:NAME).",
        ),
    ] = SECRETS_DIR,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Write Prometheus rules (and their promtool tests, Alertmanager and scrape configuration,
    a Grafana dashboard) for every rule of the watch file into --out."""
    config = _load(file)
    if intake_auth not in ("bearer", "basic"):
        fail(f"--intake-auth {intake_auth!r} is not known: write bearer or basic.")
    if not intake.lower().startswith(("http://", "https://")):
        fail(f"--intake {intake!r} is not an http:// or https:// URL: give the watch's address.")
    target = IntakeTarget(intake, intake_auth, intake_credentials_file)
    try:
        written = write_files(config, out, target, secrets_dir)
    except OSError as exc:
        fail(f"cannot write into {out} ({exc.strerror or exc}): give a writable --out directory.")
    rules = written.rules
    if json_out:
        print_json(
            {
                "files": [str(p) for p in written.paths],
                "groups": len(rules.groups),
                "alerts": [
                    {"alert": a.alert, "rule": a.rule, "kind": a.kind, "severity": a.severity}
                    for a in rules.alerts
                ],
                "skipped": rules.skipped,
                "warnings": rules.warnings,
                "unproven": written.unproven,
            }
        )
        return
    for path in written.paths:
        console.print(f"wrote {path}", highlight=False)
    console.print(
        f"{len(rules.groups)} rule groups, {len(rules.alerts)} alerting rules", highlight=False
    )
    for sentence in rules.skipped:
        err_console.print(f"[yellow]left out:[/] {sentence}", highlight=False)
    for sentence in rules.warnings:
        err_console.print(f"[yellow]warning:[/] {sentence}", highlight=False)
    for sentence in written.unproven:
        err_console.print(f"[yellow]not proven by the tests:[/] {sentence}", highlight=False)
