"""`crisisctl load URL`: drive a loopback service with the open or closed model and report.

``--rate R`` runs the open model (R requests/s, latency corrected for coordinated omission);
``--users N`` runs the closed model (N virtual users with think time). The result is shown
as a short table, printed as JSON (``--json``) and/or written to a file (``--out``). Exit
codes: 0 ok, 2 bad usage or input, 3 the target could not be reached at all.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_UNREACHABLE, console, fail, print_json
from crisisctl.load.engine import LoadResult, ThinkTime, run_closed, run_open

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``2m``, ``500ms``, ``1h`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use e.g. 30s, 2m, 500ms or a number of seconds."
        )
    value = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite duration.")
    return value


def run_async(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run `coro` on a fresh event loop, uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def render(data: dict[str, Any]) -> None:
    """A short human view of a result document."""
    model = data["model"]
    head = f"{data['url']}: {model} model, {data['duration_s']:g} s"
    if model == "open":
        head += f", target {data['target_rate']:g} req/s on {data['connections']} connections"
    else:
        head += f", {data['users']} users"
    console.print(head, highlight=False)
    table = Table("metric", "value")
    table.add_row("requests", str(data["requests"]))
    table.add_row("requests/s", f"{data['requests_per_second']:.1f}")
    table.add_row("completed", str(data["completed"]))
    errors = {k: v for k, v in data["errors"].items() if v}
    table.add_row("errors", ", ".join(f"{k}={v}" for k, v in errors.items()) or "0")
    table.add_row(
        "status codes", ", ".join(f"{k}={v}" for k, v in data["status_counts"].items()) or "-"
    )
    if model == "open":
        table.add_row("late / dropped starts", f"{data['late_starts']} / {data['dropped']}")
    table.add_row("bytes received", str(data["bytes_received"]))
    console.print(table)
    lat = Table("latency ms", "p50", "p90", "p95", "p99", "p99.9", "max")
    rows = [("corrected" if model == "open" else "latency", data["latency_ms"])]
    if data.get("latency_uncorrected_ms") is not None:
        rows.append(("uncorrected", data["latency_uncorrected_ms"]))
    for name, summary in rows:
        lat.add_row(name, *(_ms(summary[k]) for k in ("p50", "p90", "p95", "p99", "p999", "max")))
    console.print(lat)


def load(
    url: str = typer.Argument(..., help="Loopback URL to load, e.g. http://127.0.0.1:8000/"),
    rate: float = typer.Option(None, "--rate", help="Open model: requests per second."),
    users: int = typer.Option(None, "--users", help="Closed model: number of virtual users."),
    duration: str = typer.Option("10s", "--duration", help="How long: 30s, 2m, 500ms or seconds."),
    connections: int = typer.Option(64, "--connections", help="Open model: connection pool size."),
    timeout: str = typer.Option("10s", "--timeout", help="Per-request timeout (and drain limit)."),
    method: str = typer.Option("GET", "--method", help="HTTP method."),
    ramp_up: str = typer.Option(
        "0s", "--ramp-up", help="Closed model: spread user starts over this."
    ),
    think: str = typer.Option(
        "0s", "--think", help="Closed model: think time (mean for exponential)."
    ),
    think_dist: str = typer.Option(
        "constant",
        "--think-dist",
        help="Closed model: constant, uniform (0..2×think) or exponential.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    out: Path = typer.Option(None, "--out", help="Write the JSON report to this file."),
) -> None:
    """Load a loopback service: open model with --rate, closed model with --users."""
    if (rate is None) == (users is None):
        fail("give exactly one of --rate (open model) or --users (closed model).")
    try:
        duration_s = parse_duration(duration)
        timeout_s = parse_duration(timeout)
        coro: Coroutine[Any, Any, LoadResult]
        if rate is not None:
            coro = run_open(
                url, rate=rate, duration_s=duration_s, connections=connections,
                timeout_s=timeout_s, method=method,
            )  # fmt: skip
        else:
            mean = parse_duration(think)
            dist = (
                ThinkTime(think_dist, 0.0, 2 * mean)
                if think_dist == "uniform"
                else ThinkTime(think_dist, mean)
            )
            coro = run_closed(
                url, users=users, duration_s=duration_s, ramp_up_s=parse_duration(ramp_up),
                think=dist, timeout_s=timeout_s, method=method,
            )  # fmt: skip
    except ValueError as exc:
        fail(str(exc))
    try:
        result = run_async(coro)
    except ValueError as exc:
        fail(str(exc))
    finally:
        coro.close()
    data = result.to_dict()
    if out is not None:
        try:
            out.write_text(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            fail(f"could not write the report to {out} ({exc.strerror or exc}).")
    if json_out:
        print_json(data)
    else:
        render(data)
    if result.unreachable:
        fail(
            f"{url} could not be reached: all {result.requests} requests were refused; "
            "is the service running?",
            EXIT_UNREACHABLE,
        )
