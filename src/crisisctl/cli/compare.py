"""`crisisctl compare BEFORE.json AFTER.json`: each figure of two load reports side by side.

Prints p50/p95/p99/max latency, error rate, dropped arrivals and requests/s before and after,
with the ratio (above 1 is better) and the improvement in percent (latency: (before − after)
÷ before × 100), for the whole run and for each operation both reports have; ``--json`` for
machines. Runs of different tests (URL, method, model, rate or users, duration, arrivals) are
refused unless ``--allow-mismatch``; a run that dropped more than 1 % of its arrivals is
flagged in red. Exit codes: 0 ok, 2 a file is missing or is not a crisisctl load report, or
the runs differ.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from crisisctl import __version__
from crisisctl.cli.output import console, fail, print_json
from crisisctl.load.compare import (
    ReportError,
    Row,
    compare_reports,
    describe,
    load_report,
    mismatch_sentence,
    mismatches,
)
from crisisctl.load.report import dropped_warning

__all__ = ["compare"]


def _value(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "req/s":
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _ratio(row: Row) -> str:
    return "—" if row.ratio is None else f"{row.ratio:,.2f}×"


def _pct(row: Row) -> str:
    if row.improvement_pct is None:
        return "—"
    pct = row.improvement_pct
    colour = "green" if pct > 0 else ("red" if pct < 0 else "default")
    return f"[{colour}]{pct:+.1f} %[/]"


def compare(
    before: Path = typer.Argument(..., help="The JSON report before (crisisctl load --out)."),
    after: Path = typer.Argument(..., help="The JSON report after."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    allow_mismatch: bool = typer.Option(
        False, "--allow-mismatch", help="Compare runs of different tests (URL, rate, …) anyway."
    ),
) -> None:
    """Compare two load reports: before, after, ratio and improvement for each figure."""
    try:
        old, new = load_report(before), load_report(after)
    except ReportError as exc:
        fail(str(exc))
    differ = mismatches(old, new)
    if differ and not allow_mismatch:
        fail(mismatch_sentence(differ))
    rows = compare_reports(old, new)
    warnings = {
        which: text
        for which, report in (("before", old), ("after", new))
        if (text := dropped_warning(report)) is not None
    }
    if json_out:
        print_json(
            {
                "report": "compare",
                "crisisctl_version": __version__,
                "before": {"path": str(before), "started_at": old.get("started_at")},
                "after": {"path": str(after), "started_at": new.get("started_at")},
                "mismatches": [m.as_dict() for m in differ],
                "dropped_warnings": warnings,
                "rows": [row.as_dict() for row in rows],
            }
        )
        return
    console.print(f"before: {before}   after: {after}", highlight=False)
    if differ:
        note = f"compared anyway (--allow-mismatch): the runs differ in {describe(differ)}."
        console.print(f"[yellow]{note}[/]", highlight=False)
    table = Table("scope", "figure", "before", "after", "ratio", "improvement")
    for row in rows:
        table.add_row(
            row.scope or "all",
            f"{row.label} ({row.unit})",
            _value(row.before, row.unit),
            _value(row.after, row.unit),
            _ratio(row),
            _pct(row),
        )
    console.print(table)
    for which, text in warnings.items():
        console.print(f"[bold red]{which}:[/] [red]{text}[/]", highlight=False)
