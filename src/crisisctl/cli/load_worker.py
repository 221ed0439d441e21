"""`crisisctl load-worker redis://HOST:PORT/DB`: serve distributed load runs.

The worker registers in the coordinator's Redis (a heartbeat that expires when it is gone),
waits for a run started with ``crisisctl load … --coordinator URL --workers N``, sends its
share of it and streams its figures back (`crisisctl.load.distributed_worker`). It exits after
one run unless ``--forever``; ``--processes N`` runs its share on N engine processes (all the
host's cores; the share splits exactly, as a local ``--processes`` run's load does). The URL
may carry a password (``redis://:PASSWORD@HOST:PORT/DB``, or ``env:NAME`` to read the URL from
an environment variable); it is never printed. Exit codes: 0 a run was served, 1 no run came
within ``--wait``, 3 Redis could not be reached.
"""

from __future__ import annotations

import os

import typer

from crisisctl.cli.output import EXIT_UNREACHABLE, console, fail
from crisisctl.load.scenario import parse_duration

__all__ = ["load_worker"]


def load_worker(
    url: str = typer.Argument(
        ..., help="The coordinator's Redis: redis://[:PASSWORD@]HOST:PORT/DB, or env:NAME."
    ),
    forever: bool = typer.Option(False, "--forever", help="Serve run after run, not just one."),
    wait: str = typer.Option(
        None, "--wait", help="Give up when no run comes within this long (default: wait on)."
    ),
    processes: int = typer.Option(
        1,
        "--processes",
        help="Engine processes for this worker's share (e.g. the host's cores); the share "
        "splits between them exactly, as a local --processes run's load does.",
    ),
) -> None:
    """Send a distributed run's share for the coordinator at URL, then exit (or --forever)."""
    from crisisctl.load.distributed_worker import serve

    if url.startswith("env:"):
        name = url.removeprefix("env:")
        value = os.environ.get(name)
        if not value:
            fail(f"the environment variable {name} is not set; export the Redis URL in it.")
        url = value
    if processes < 1:
        fail(f"--processes must be at least 1, not {processes}.")
    wait_s = None
    if wait is not None:
        try:
            wait_s = parse_duration(wait)
        except ValueError:
            fail(f"--wait {wait!r} is not a duration: write e.g. 30s or 2m.")

    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    try:
        serve(url, forever=forever, say=say, wait_s=wait_s, processes=processes)
    except ValueError as exc:
        code = EXIT_UNREACHABLE if str(exc).startswith("could not reach") else 1
        fail(str(exc), code)
    except KeyboardInterrupt:
        fail("the worker was interrupted.", 1)
