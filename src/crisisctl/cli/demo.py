"""`crisisctl demo`: a whole performance crisis, end to end, on 127.0.0.1 (≤ 3 minutes).

A sick scanning service and a crowd of aggressive pollers → triage (P0/P1) → an incident →
a "before" load report → stabilization (guard, scan cap, cleanup, backoff polling) →
re-triage (OK/P3) → an "after" load report and the comparison → the validation suite →
resolution and the post-mortem. Artefacts go to ``--out`` (default ``./crisis-demo/``), the
incident to the SQLite file ``<out>/incidents.db`` unless ``--db`` says otherwise.
``--json`` prints summary.json; ``--keep-running`` leaves the guarded service up until Ctrl-C.
Exit codes: 0 the crisis went as expected, 1 a verdict or check did not (or the lab could not
run), 2 bad input.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_CHECK_FAILED, console, fail, print_json
from crisisctl.incidents.db import StoreError
from crisisctl.lab.crisis import Crisis, DemoOptions
from crisisctl.lab.process import LabError
from crisisctl.lab.profile import DEFAULT, QUICK

SEVERITY_STYLE = {"P0": "bold white on red", "P1": "bold red", "P2": "bold yellow",
                  "P3": "cyan", "OK": "bold green"}  # fmt: skip


MTTX_NAMES = ("time_to_detect", "time_to_acknowledge", "time_to_mitigate", "time_to_resolve")


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, int | float) else "-"


def narrate(kind: str, data: dict[str, Any]) -> None:
    """One short Rich line per event of the crisis."""
    if kind == "step":
        console.print(
            f"[bold cyan]▶ {data['t_s']:>5.1f} s[/] {data['message']}",
            highlight=False,
            soft_wrap=True,
        )
    elif kind == "live":
        console.print(
            f"  [dim]{data['t_s']:>5.1f} s {data['phase']:<5}[/] "
            f"polls {_num(data['polls_per_s'])}/s "
            f"p95 {_num(data['poll_p95_ms'], 0)} ms, {data['polls_skipped']} skipped | scans "
            f"+{data['scans_started']}, {data['limited']} limited | "
            f"active {data['scans_active']}, "
            f"queue {data['pool_waiting']} | RSS {data['rss_mb']} MB "
            f"({data['stored_mb']} MB results)",
            highlight=False,
            soft_wrap=True,
        )
    elif kind == "verdict":
        sev = data["severity"]
        console.print(
            f"[{SEVERITY_STYLE.get(sev, 'bold')}] {sev} [/] triage {data['which']}: "
            f"{data['label']} — p95 {_num(data['p95_ms'], 0)} ms "
            f"({_num(data['degradation_factor'], 2)}× target), RSS {data['rss_mb']} MB "
            f"(+{data['rss_growth_mb']} MB during triage)",
            highlight=False,
            soft_wrap=True,
        )
        for reason in data["reasons"]:
            console.print(f"      • {reason}", highlight=False)


def render(summary: dict[str, Any]) -> None:
    """The closing summary: severities, before/after, MTTx, artefacts."""
    before, after = summary["triage_before"], summary["triage_after"]
    lb, la = summary["load_before"], summary["load_after"]
    imp = summary["improvement_pct"]
    table = Table("", "before", "after", "improvement", title="The crisis, before and after")
    table.add_row("triage", before["severity"], after["severity"], "")
    for key in ("p50", "p95", "p99"):
        table.add_row(f"status read {key} (ms)", _num(lb[f"{key}_ms"]), _num(la[f"{key}_ms"]),
                      f"{_num(imp[key])} %")  # fmt: skip
    table.add_row("error rate (%)", _num((lb["error_rate"] or 0) * 100, 2),
                  _num((la["error_rate"] or 0) * 100, 2), "")  # fmt: skip
    crowd = summary["crowd"]
    table.add_row("dashboard polls/s", _num(crowd["before"]["polls_per_s"], 2),
                  _num(crowd["after"]["polls_per_s"], 2),
                  f"{_num(crowd['polling_reduction_pct'])} % fewer")  # fmt: skip
    console.print()
    console.print(table)
    inc = summary["incident"]
    mttx = inc["mttx_ms"]
    console.print(
        f"incident #{inc['id']} ({inc['severity']}): {' → '.join(inc['statuses'])}; "
        + ", ".join(
            f"{name.replace('_', ' ')} {_num((mttx[name] or 0) / 1000)} s"
            for name in MTTX_NAMES
            if mttx.get(name) is not None
        ),
        highlight=False,
    )
    val = summary["validation"]
    failed = [name for name, ok in val["checks"].items() if not ok]
    skipped = val.get("skipped") or []
    console.print(f"validation: {'PASSED' if val['passed'] else 'FAILED'} "
                  f"({val['success_rate']} %){' — failed: ' + ', '.join(failed) if failed else ''}"
                  f"{' — skipped (not counted): ' + ', '.join(skipped) if skipped else ''}",
                  highlight=False)  # fmt: skip
    console.print("artefacts: " + ", ".join(summary["artefacts"].values()), highlight=False)
    bad = [name for name, ok in summary["expectations"].items() if not ok]
    if bad:
        console.print(f"[bold red]not as expected:[/] {', '.join(bad)}", highlight=False)
    console.print(f"done in {summary['duration_s']} s (profile {summary['profile']})")


def _keep_running(crisis: Crisis, summary: dict[str, Any], quiet: bool) -> None:
    url = summary["service"]["url"]
    scan = Path(summary["artefacts"]["triage_after"]).parent
    if not quiet:
        db = summary["incident"]["db"]
        console.print(
            f"\n[bold]The guarded service stays up on {url}[/] (Ctrl-C stops it). Try:",
            soft_wrap=True,
        )
        for line in (
            f"crisisctl guard status {url}",
            f"crisisctl triage {url}/health --target-ms {summary['target_ms']:g}",
            f"crisisctl load {url}/health --rate 50 --duration 5s",
            f"crisisctl validate {url}/health --burst-path 'POST /api/scans'",
            f"crisisctl incident show {summary['incident']['id']} --db {db}",
            # the two runs read different probe scans: their URLs differ
            f"crisisctl compare {scan}/before.json {scan}/after.json --allow-mismatch",
        ):
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(
            f"  (POST {url}/api/scans starts a scan; finished scans expire once unread for "
            f"{summary['ttl_s']:g} s)",
            highlight=False,
            soft_wrap=True,
        )
    try:
        while crisis.fixed is not None and crisis.fixed.running:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        crisis.stop_service()


def demo(
    quick: bool = typer.Option(False, "--quick", help="The short profile (~40 s) the tests use."),
    out: Path = typer.Option(Path("crisis-demo"), "--out", help="Folder for the artefacts."),
    db: str = typer.Option(
        None, "--db", help="Incident database URL or file (default: <out>/incidents.db)."
    ),
    keep_running: bool = typer.Option(
        False, "--keep-running", help="Leave the guarded service up afterwards (Ctrl-C stops it)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json only."),
) -> None:
    """Run a whole performance crisis on 127.0.0.1: triage, incident, fix, validate, learn."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file: give a folder for the demo's artefacts.")
    options = DemoOptions(QUICK if quick else DEFAULT, out, db, keep_running)
    crisis = Crisis(options, None if json_out else narrate)
    try:
        summary = asyncio.run(crisis.run())
    except LabError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    except StoreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if json_out:
        print_json(summary)
    else:
        render(summary)
    if keep_running:
        _keep_running(crisis, summary, json_out)
    if not summary["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)
