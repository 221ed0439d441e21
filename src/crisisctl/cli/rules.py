"""`crisisctl rules generate`: a watch file's rules as Prometheus rules, their promtool tests,
Alertmanager and scrape configuration and a Grafana dashboard (``watch.promfiles``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crisisctl.cli.output import EXIT_USAGE, console, err_console, fail, print_json
from crisisctl.watch.config import WatchConfig, WatchFileError, load_watch_file
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
        if len(exc.problems) == 1:
            fail(str(exc))
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def generate(
    file: Annotated[Path, typer.Argument(help="The watch file (YAML) `crisisctl watch` reads.")],
    out: Annotated[Path, typer.Option("--out", help="The directory to write the files into.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Write Prometheus rules (and their promtool tests, Alertmanager and scrape configuration,
    a Grafana dashboard) for every rule of the watch file into --out."""
    config = _load(file)
    try:
        written = write_files(config, out)
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
