"""`crisisctl demo`: the guard protecting a small service driven past its capacity (loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_CHECK_FAILED, console, fail, print_json
from crisisctl.lab.guard_demo import DemoError, run_guard_demo


def demo(
    duration: float = typer.Option(15.0, help="Seconds of overload (5 to 120)."),
    out: Path = typer.Option(Path("crisis-demo"), help="Folder for the JSON artefact."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
) -> None:
    """Start a sample service with the guard on 127.0.0.1, overload it, show what the guard did."""
    if not 5.0 <= duration <= 120.0:
        fail("--duration must be between 5 and 120 seconds")

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if json_out:
            return
        if kind == "phase":
            console.print(f"[bold cyan]>[/] {data['message']}")
        elif kind == "baseline":
            console.print(f"  unloaded p50 {data['p50_ms']} ms, p99 {data['p99_ms']} ms -> "
                          f"capacity ~{data['capacity_rps']} req/s")  # fmt: skip
        elif kind == "status":
            shed = ", ".join(f"{k}={v}" for k, v in data["shed"].items()) or "none"
            console.print(f"  t={data['t_s']:>4}s mode={data['mode']:<10} limit={data['limit']:<4} "
                          f"in-flight={data['in_flight']:<4} queued={data['queued']:<3} "
                          f"p99={data['p99_ms']} ms shed: {shed}", highlight=False)  # fmt: skip
        elif kind == "mode":
            console.print(f"[bold yellow]> switched the guard to {data['mode']}[/] "
                          f"(HTTP {data['http_status']})")  # fmt: skip

    try:
        result = asyncio.run(run_guard_demo(duration_s=duration, out_dir=out, on_event=on_event))
    except DemoError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    if json_out:
        print_json(result)
        return
    render(result)


def render(result: dict[str, Any]) -> None:
    """The closing summary of the demo."""
    table = Table(
        "route", "offered/s", "2xx", "429", "503", "errors", "admitted p50", "admitted p99"
    )
    for name, path in (
        ("work", "GET /api/work"),
        ("scans", "POST /api/scans"),
        ("report", "GET /api/report (low)"),
    ):
        part = result[name]
        counts = part["status_counts"]
        ok = sum(v for k, v in counts.items() if k.startswith("2"))
        lat = part["admitted_latency_ms"] or {}
        table.add_row(
            path, str(part["offered_rps"]), str(ok), str(counts.get("429", 0)),
            str(counts.get("503", 0)), str(sum(part["errors"].values())),
            f"{lat.get('p50', '-')} ms", f"{lat.get('p99', '-')} ms",
        )  # fmt: skip
    console.print()
    console.print("[bold]What the guard did[/]")
    console.print(table)
    guard = result["guard"]
    conc = guard["concurrency"]
    unloaded = result["unloaded"]
    work = result["work"]
    console.print(f"unloaded: p50 {unloaded['p50_ms']} ms, p99 {unloaded['p99_ms']} ms, "
                  f"capacity ~{unloaded['capacity_rps']} req/s")  # fmt: skip
    console.print(f"under 3x overload: {work['ok_rps']} req/s served, admitted p99 "
                  f"{(work['admitted_latency_ms'] or {}).get('p99')} ms")  # fmt: skip
    console.print(f"concurrency limit now {conc['limit']} (adaptive; no-load latency "
                  f"{conc['rtt_noload_ms']} ms), shed by reason: {guard['shed']}")  # fmt: skip
    for policy in guard["rate_limits"]:
        console.print(f"rate limit {policy['name']}: {', '.join(policy['base_limits'])}")
    for change in guard["mode"]["history"]:
        console.print(f"mode {change['previous']} -> {change['mode']} at {change['at']} by "
                      f"{change['actor']}: {change['reason']}")  # fmt: skip
    if "artefact" in result:
        console.print(f"full figures: {result['artefact']}")
