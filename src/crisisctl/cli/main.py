"""Entry point of the `crisisctl` command.

Each command group lives in its own module under `crisisctl.cli` and is imported only when it
runs: `crisisctl triage` must not pay for SQLAlchemy, pydantic or Jinja2 that other commands
need, and `crisisctl --help` lists every command from the short descriptions below without
importing any of them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from crisisctl import __version__


@dataclass(frozen=True)
class _Lazy:
    module: str
    attribute: str
    summary: str


#: command name -> where it lives (a Typer sub-app or a command function) and its one-line help
COMMANDS: dict[str, _Lazy] = {
    "triage": _Lazy("triage", "triage", "How bad is it, in seconds: P0-P3 with evidence."),
    "baseline": _Lazy("baseline", "app", "Save, list, show and delete healthy baselines."),
    "guard": _Lazy("guard", "app", "Read a guarded service's status and switch its mode."),
    "load": _Lazy("load", "load", "Drive a service (any host, https) with real load and report."),
    "load-worker": _Lazy(
        "load_worker", "load_worker", "Send a distributed run's share for a coordinator."
    ),
    "compare": _Lazy("compare", "compare", "Compare two load reports, before and after."),
    "validate": _Lazy("validate", "validate", "Run the validation suite against a service."),
    "incident": _Lazy("incident", "app", "Open, log, escalate and resolve incidents."),
    "alerts": _Lazy("alerts", "app", "List watch's firing and recent alerts; silence them."),
    "postmortem": _Lazy("postmortem", "postmortem", "Generate an incident's post-mortem."),
    "watch": _Lazy("watch", "watch", "Watch services: scrape, alert on rules, respond at once."),
    "demo": _Lazy("demo", "demo", "Run a whole performance crisis end to end, on loopback."),
    "serve": _Lazy("serve", "serve", "Serve the live crisis console: API, events, pages."),
}


class LazyGroup(TyperGroup):
    """A Typer group whose sub-commands are imported on first use.

    (Contexts and formatters are typed Any: Typer ≥ 0.16 vendors its own click.)
    """

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        if self._listing:  # the help page needs only the name and its one line
            return TyperCommand(cmd_name, help=spec.summary, short_help=spec.summary)
        module = importlib.import_module(f"crisisctl.cli.{spec.module}")
        target: Any = getattr(module, spec.attribute)
        if isinstance(target, typer.Typer):
            target._add_completion = False  # the root has no completion options either
            command = typer.main.get_command(target)
        else:
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command(cmd_name)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="crisisctl",
    cls=LazyGroup,
    help="Take a web service through a performance crisis: "
    "detect, classify, stabilize, diagnose, validate, learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
