"""`crisisctl serve [SERVE.yaml]`: the console's web server (API, events, pages) with the watch
loop in the same process; `crisisctl serve hash-password` prints a scrypt hash for `users:`.

Flags override the serve file: ``--listen``, ``--watch``, ``--users`` (a YAML file with
``tokens:`` and/or ``users:``), ``--state-dir``, ``--db``, ``--allow-anonymous-viewer``.
Exit codes: 0 a clean stop (SIGINT/SIGTERM: open event streams are ended at once, the watch
state and the event history saved); 2 an invalid serve, users or watch file, an unset
``env:NAME``, no credentials configured (or anonymous viewers off loopback), an unusable
incident store, or an address that cannot be listened on.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from crisisctl.cli.output import EXIT_USAGE, err_console, fail

HASH_COMMAND = "hash-password"


def serve(
    config: Annotated[
        str | None,
        typer.Argument(
            help="The serve file (YAML), or `hash-password` to print a password hash.",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on (default 127.0.0.1:8700).")
    ] = None,
    watch: Annotated[
        Path | None, typer.Option(help="The watch file: its services feed the fleet view.")
    ] = None,
    users: Annotated[
        Path | None, typer.Option(help="A YAML file with `tokens:` and/or `users:` lists.")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where the event history and session key are kept.")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="The incident store URL (default: $CRISISCTL_DB).")
    ] = None,
    allow_anonymous_viewer: Annotated[
        bool,
        typer.Option(
            "--allow-anonymous-viewer",
            help="Let anyone read (never change) without signing in; loopback addresses only.",
        ),
    ] = False,
) -> None:
    """Serve the crisis console: JSON API, live event stream and pages, watch loop in process."""
    if config == HASH_COMMAND:
        _hash_password()
        return
    from crisisctl.server.settings import ServeConfigError

    try:
        settings = _settings(config, listen, watch, users, state_dir, db, allow_anonymous_viewer)
    except ServeConfigError as exc:
        fail(str(exc))  # (one problem or several, one per line)
    except ValueError as exc:
        fail(str(exc))
    problem = settings.problem()
    if problem is not None:
        fail(problem)
    _run(settings)


def _hash_password() -> None:
    from crisisctl.server.auth import hash_password

    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        fail("the password is shorter than 8 characters: choose a longer one.")
    typer.echo(hash_password(password))


def _settings(
    config: str | None,
    listen: str | None,
    watch: Path | None,
    users: Path | None,
    state_dir: Path | None,
    db: str | None,
    anonymous: bool,
) -> Any:
    from crisisctl.server.settings import (
        ServeConfig,
        ServeConfigError,
        ServeSettings,
        load_serve_file,
        parse_listen,
    )

    base = Path.cwd()
    data: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        data = load_serve_file(path).model_dump(exclude_unset=True)
        base = path.resolve().parent
    if users is not None:
        extra = load_serve_file(users)
        for field in ("tokens", "users"):
            data[field] = [*data.get(field, []), *getattr(extra, field)]
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ServeConfigError("--listen", [str(exc)]) from None
        data["listen"] = listen
    if watch is not None:
        data["watch"] = str(watch.resolve())
    if state_dir is not None:
        data["state_dir"] = str(state_dir.resolve())
    if db is not None:
        data["db"] = db
    if anonymous:
        data["allow_anonymous_viewer"] = True
    return ServeSettings.build(ServeConfig.model_validate(data), base=base)


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}): pick another --listen.")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run(settings: Any) -> None:
    import uvicorn

    from crisisctl.incidents.db import StoreError
    from crisisctl.server.app import create_app
    from crisisctl.server.runtime import ServeRuntime
    from crisisctl.watch.config import WatchFileError

    runtime = ServeRuntime(settings)
    try:
        runtime.open()
    except WatchFileError as exc:
        fail(str(exc) if len(exc.problems) == 1 else f"{exc}")
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    app = create_app(settings, runtime=runtime)
    sock = _listen_socket(settings.host, settings.port)
    bound = sock.getsockname()
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=2, proxy_headers=False, server_header=False,
    )  # fmt: skip
    server = _Server(config, runtime.hub)
    where = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    err_console.print(
        f"serving on http://{where}:{bound[1]} (watching "
        f"{len(runtime.watch.config.services) if runtime.watch else 0} service(s))",
        highlight=False,
    )
    asyncio.run(server.serve_on(sock))
    if server.startup_failed:
        raise typer.Exit(EXIT_USAGE)


class _Server:
    """uvicorn's server, stopping promptly: a signal also closes the event hub, so the open
    event streams end at once instead of holding the shutdown; the signal is not re-raised
    after a graceful stop (exit 0)."""

    def __init__(self, config: Any, hub: Any) -> None:
        import uvicorn

        hub_ref = hub

        class Server(uvicorn.Server):
            loop: asyncio.AbstractEventLoop | None = None

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                else:
                    self.should_exit = True
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(hub_ref.close)

        self.server = Server(config)
        self.startup_failed = False

    async def serve_on(self, sock: socket.socket) -> None:
        self.server.loop = asyncio.get_running_loop()
        await self.server.serve(sockets=[sock])
        self.startup_failed = not self.server.started
