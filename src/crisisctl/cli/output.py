"""Shared CLI output: the Rich consoles, JSON printing and the one-sentence error exit."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

#: exit codes (DESIGN.md): 0 ok, 1 a check failed, 2 bad usage or input, 3 target unreachable
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one clear sentence to stderr (one line: a path in it is never cut by a wrap, so it
    can be copied or grepped) and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    typer.echo(json.dumps(data, indent=2, default=str))
