"""`crisisctl watch FILE [--once]`: scrape, evaluate the rules, and respond (or report once).

Exit codes: 0 nothing fires (``--once``) or a clean stop (SIGINT/SIGTERM); 1 something fires
(``--once``); 2 the watch file is invalid or cannot be read (one line per problem, with its
line number), a secret it names is not set, or the incident store cannot be opened.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Protocol

import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, console, err_console, fail
from crisisctl.watch.config import WatchConfig, WatchFileError, load_watch_file
from crisisctl.watch.engine import alert_to_dict
from crisisctl.watch.loop import Watch
from crisisctl.watch.model import Alert, AlertState, Responder, Transition


def _load(path: Path) -> WatchConfig:
    try:
        return load_watch_file(path)
    except WatchFileError as exc:
        if len(exc.problems) == 1:
            fail(str(exc))
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def watch(
    file: Annotated[Path, typer.Argument(help="The watch file (YAML): targets, rules, response.")],
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Scrape twice (--gap apart), evaluate once ignoring `for`, print what fires; "
            "exit 1 if anything fires, 0 if nothing does.",
        ),
    ] = False,
    gap: Annotated[
        float,
        typer.Option(help="--once: seconds between its two scrapes (rates need two samples)."),
    ] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="--once: print JSON.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run continuously but only print transitions as JSON lines (no incidents, "
            "notifications or actions).",
        ),
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where the series and alerts are saved (default: the file's state_dir)."),
    ] = None,
) -> None:
    """Watch services continuously: scrape, evaluate rules, open incidents and act."""
    config = _load(file)
    try:
        watcher = Watch(config, state_dir=state_dir)
    except ValueError as exc:  # an env:NAME secret that is not set
        fail(str(exc))
    if once:
        code = asyncio.run(_once(watcher, gap, json_out))
        raise typer.Exit(code)
    responder: _ClosingResponder = _PrintResponder() if dry_run else _responder(watcher, config)
    asyncio.run(_forever(watcher, config, responder))


async def _once(watcher: Watch, gap: float, json_out: bool) -> int:
    await watcher.load_state(alerts=False)
    await watcher.observe()
    if gap > 0:
        await asyncio.sleep(gap)
    now = await watcher.observe()
    await watcher.evaluate(now, ignore_for=True)
    alerts = watcher.engine.firing()
    if json_out:
        print(json.dumps({"firing": [alert_to_dict(a) for a in alerts]}, indent=2))
    elif not alerts:
        console.print("nothing fires", highlight=False)
    else:
        table = Table(title=f"{len(alerts)} alert(s) firing")
        for column in ("severity", "rule", "service", "instance", "summary"):
            table.add_column(column)
        for alert in alerts:
            labels = dict(alert.labels)
            table.add_row(
                alert.severity.name,
                alert.rule,
                alert.service,
                labels.get("instance", ""),
                alert.summary,
            )
        console.print(table)
    return EXIT_CHECK_FAILED if alerts else EXIT_OK


class _ClosingResponder(Responder, Protocol):
    """A responder the command closes on the way out (its pending work drained)."""

    async def aclose(self) -> None: ...


class _PrintResponder:
    """--dry-run: each transition as one JSON line on stdout."""

    async def aclose(self) -> None:
        return None

    async def handle(
        self, transitions: Sequence[Transition], firing: Sequence[Alert], now: datetime
    ) -> None:
        for change in transitions:
            previous: AlertState | None = change.previous
            row = {
                "at": change.at.isoformat(),
                "previous": previous,
                "alert": alert_to_dict(change.alert),
            }
            print(json.dumps(row, default=str), flush=True)


async def _forever(watcher: Watch, config: WatchConfig, responder: _ClosingResponder) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    series, alerts = await watcher.load_state()
    err_console.print(
        f"watching {len(config.services)} service(s) every {config.interval:g} s "
        f"({series} series and {alerts} alert(s) restored from {watcher.state_path})",
        highlight=False,
    )
    try:
        await watcher.run(stop, responder)
    finally:
        await responder.aclose()


def _responder(watcher: Watch, config: WatchConfig) -> _ClosingResponder:
    """The response side (incidents, notifications, runbooks), imported only here: --once and
    --dry-run never load it. An unusable store or an unset env:NAME is one sentence, exit 2."""
    from crisisctl.incidents.db import StoreError
    from crisisctl.watch.respond import build_responder

    try:
        return build_responder(config.response, db_url=config.db_url(), directory=watcher.directory)
    except (StoreError, ValueError) as exc:  # NotifyConfigError is a ValueError
        fail(str(exc))
