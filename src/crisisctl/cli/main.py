"""Entry point of the `crisisctl` command."""

from __future__ import annotations

import typer

from crisisctl import __version__
from crisisctl.cli import (
    baseline,
    compare,
    demo,
    guard,
    incident,
    load,
    postmortem,
    triage,
    validate,
)

app = typer.Typer(
    name="crisisctl",
    help="Take a web service through a performance crisis: "
    "detect, classify, stabilize, diagnose, validate, learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(guard.app, name="guard")
app.command("demo")(demo.demo)
app.command("load")(load.load)
app.command("compare")(compare.compare)
app.command("validate")(validate.validate)
app.command("triage")(triage.triage)
app.add_typer(baseline.app, name="baseline")
app.add_typer(incident.app, name="incident")
app.command("postmortem")(postmortem.postmortem)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crisisctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """crisisctl — performance crisis toolkit."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
