"""`crisisctl watch FILE [--once] [--listen HOST:PORT]`: scrape, evaluate the rules, and respond
(or report once); with ``--listen`` it also serves the Alertmanager intake in the same loop.

Exit codes: 0 nothing fires (``--once``) or a clean stop (SIGINT/SIGTERM); 1 something fires
(``--once``); 2 the watch file is invalid or cannot be read (one line per problem, with its
line number), a secret it names is not set, the incident store cannot be opened, or the
intake cannot listen (no credential, a taken port).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Protocol

import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_CHECK_FAILED, EXIT_OK, console, err_console, fail
from crisisctl.watch.config import WatchConfig, WatchFileError, load_watch_file
from crisisctl.watch.engine import alert_to_dict
from crisisctl.watch.loop import Watch
from crisisctl.watch.model import Alert, AlertState, Responder, Transition


def _load(path: Path) -> WatchConfig:
    try:
        return load_watch_file(path)
    except WatchFileError as exc:
        fail(str(exc))  # (one problem or several, one per line)


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
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Also serve the Alertmanager intake (POST /api/v1/alertmanager) and GET "
            "/healthz here, in the same process; credentials from the file's intake: section.",
        ),
    ] = None,
) -> None:
    """Watch services continuously: scrape, evaluate rules, open incidents and act."""
    config = _load(file)
    try:
        watcher = Watch(config, state_dir=state_dir)
    except ValueError as exc:  # an env:NAME secret that is not set
        fail(str(exc))
    if once:
        if listen is not None:
            fail("--listen serves the Alertmanager intake continuously: drop --once.")
        code = asyncio.run(_once(watcher, gap, json_out))
        raise typer.Exit(code)
    if listen is not None and dry_run:
        fail("--listen books Alertmanager's alerts in the incident store: drop --dry-run.")
    sock = _listen(listen, config) if listen is not None else None
    responder: _ClosingResponder = _PrintResponder() if dry_run else _responder(watcher, config)
    asyncio.run(_forever(watcher, config, responder, sock))


async def _once(watcher: Watch, gap: float, json_out: bool) -> int:
    await watcher.load_state(alerts=False)
    await watcher.backfill()
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


def _listen(listen: str, config: WatchConfig) -> socket.socket:
    """The intake's listening socket (checked before anything starts: one sentence, exit 2)."""
    from crisisctl.watch.intake_auth import intake_auth
    from crisisctl.watch.intake_server import bind, parse_listen

    try:
        host, port = parse_listen(listen)
        intake_auth(config.intake, host)  # no credential on a public listener: refuse now
        return bind(host, port)
    except ValueError as exc:  # ListenError, IntakeConfigError, an unset env:NAME
        fail(str(exc))


async def _serve_intake(
    sock: socket.socket, config: WatchConfig, responder: _ClosingResponder, stop: asyncio.Event
) -> None:
    from crisisctl.severity import Severity
    from crisisctl.watch.config_sources import IntakeSpec
    from crisisctl.watch.intake import INTAKE_PATH, Intake, intake_app
    from crisisctl.watch.intake_auth import intake_auth
    from crisisctl.watch.intake_server import serve
    from crisisctl.watch.respond import WatchResponder

    assert isinstance(responder, WatchResponder)
    spec = config.intake or IntakeSpec()
    host, port = sock.getsockname()[:2]
    intake = Intake(responder.db, responder, default_severity=Severity[spec.default_severity])
    app = intake_app(
        intake, intake_auth(spec, host), max_body=spec.max_body, max_alerts=spec.max_alerts
    )
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"Alertmanager intake listening on http://{shown}:{port}{INTAKE_PATH}", highlight=False
    )
    await serve(app, sock, stop)


async def _forever(
    watcher: Watch,
    config: WatchConfig,
    responder: _ClosingResponder,
    sock: socket.socket | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    series, alerts = await watcher.load_state()
    if config.source is not None:
        points = await watcher.backfill()
        err_console.print(
            f"reading the series from Prometheus at {config.source.prometheus} "
            f"({points} points of history read back)",
            highlight=False,
        )
    err_console.print(
        f"watching {len(config.services)} service(s) every {config.interval:g} s "
        f"({series} series and {alerts} alert(s) restored from {watcher.state_path})",
        highlight=False,
    )
    try:
        if sock is None:
            await watcher.run(stop, responder)
        else:
            await asyncio.gather(
                watcher.run(stop, responder), _serve_intake(sock, config, responder, stop)
            )
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
