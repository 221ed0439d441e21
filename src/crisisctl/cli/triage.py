"""`crisisctl triage URL`: how bad is it, in seconds — severity, evidence, next steps.

Probes a service (any host, http:// or https://, with the shared transport flags of
`crisisctl.cli.transport_options`) within a time budget (health, the guard's status, the given
operations with capped concurrency, the host's resources) and grades it P0–P3/OK with
`severity.classify()` against ``--target-ms`` or a saved ``--baseline`` (where a slowdown counts
only beyond the baseline's own spread: see probe/spread.py). Output: a Rich panel,
or ``--json``; ``--out FILE`` also writes the JSON. ``--incident`` opens an incident whose first
timeline entry after "opened" is the verdict. Exit codes: 0; 1 when ``--fail-on SEV`` is met;
3 when the target is unreachable and ``--fail-on`` is given; 2 on bad input.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from crisisctl.cli import transport_options as topt
from crisisctl.cli.output import (
    EXIT_CHECK_FAILED,
    EXIT_UNREACHABLE,
    console,
    err_console,
    fail,
    print_json,
)
from crisisctl.probe.guard import describe_limits
from crisisctl.probe.host import is_unavailable
from crisisctl.probe.plan import BaselineRef, TriagePlan, plan_triage
from crisisctl.probe.profile import ProfileError
from crisisctl.probe.triage import run_triage
from crisisctl.severity import Severity
from crisisctl.units import parse_duration

COLORS = {"P0": "bold white on red", "P1": "bold red", "P2": "bold yellow", "P3": "cyan",
          "OK": "bold green"}  # fmt: skip


def load_baseline(name: str, db_url: str | None) -> BaselineRef:
    """The saved baseline `name` from the incident database (fail() with exit 2 if unusable)."""
    from crisisctl.incidents.baselines import get_baseline
    from crisisctl.incidents.db import StoreError, open_database

    try:
        found = get_baseline(open_database(db_url), name)
    except StoreError as exc:
        fail(str(exc))
    if found is None:
        fail(
            f"there is no baseline named {name!r}: `crisisctl baseline list` shows the saved ones."
        )
    return BaselineRef(found.name, found.profile, found.created_at, found.expires_at)


def build_plan(
    url: str,
    *,
    paths: list[str] | None,
    method: str,
    body: str | None,
    target_ms: float | None,
    baseline: BaselineRef | None,
    samples: int,
    concurrency: int,
    budget: str,
    timeout: str | None,
    pid: int | None,
    health: str | None,
    guard_prefix: str,
    collect_host: bool,
    transport: topt.Transport | None = None,
    tool: str = "crisisctl triage",
) -> TriagePlan:
    """Check the options (fail() with exit 2 and one sentence on bad input); with `transport`
    (the shared flags) the target gets its TLS, pins and auth headers, and is preflighted (a
    certificate or name problem exits 3)."""
    target = None
    if transport is not None:
        target = transport.target(url, tool)
    try:
        plan = plan_triage(
            url, paths=paths, method=method, body=body, target_ms=target_ms,
            baseline=baseline, samples=samples, concurrency=concurrency,
            budget_s=parse_duration(budget),
            timeout_s=parse_duration(timeout) if timeout is not None else None,
            pid=pid, health_path=health, guard_prefix=guard_prefix, collect_host=collect_host,
            target=target,
        )  # fmt: skip
    except (ValueError, ProfileError) as exc:
        fail(str(exc))
    if transport is not None:
        transport.check(plan.target)
    return plan


def execute(plan: TriagePlan) -> dict[str, Any]:
    """Run the plan on a fresh event loop."""
    return asyncio.run(run_triage(plan))


def write_out(report: dict[str, Any], out: Path | None) -> None:
    """Write the JSON report to `out` when given."""
    if out is None:
        return
    try:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        fail(f"could not write the report to {out} ({exc.strerror or exc}).")


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def _pct(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def render(report: dict[str, Any]) -> None:
    """The Rich panel for people."""
    sev = report["severity"]
    lat = report["latency_ms"]
    ref = report["reference"]
    factor = report["degradation_factor"]
    interval = report.get("degradation_factor_interval")
    head = Table.grid(padding=(0, 2))
    head.add_row("severity", Text(f"{report['label']}", style=COLORS.get(sev, "")))
    if report.get("response_time"):
        head.add_row("respond", f"{report['response_time']}, {report['escalation']}")
    against = (
        f"target {ref['target_ms']:g} ms" if ref["kind"] == "target"
        else f"baseline {ref['name']!r}{' (EXPIRED)' if ref['expired'] else ''}"
    )  # fmt: skip
    head.add_row(
        "latency",
        f"p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  p99 {_ms(lat['p99'])}  "
        f"max {_ms(lat['max'])} ms  vs {against}"
        + (f"  → {factor:.2f}×" if isinstance(factor, int | float) else "")
        + (
            f" ({interval['confidence'] * 100:g} % CI {interval['low']:.2f}-"
            f"{interval['high']:.2f}×)"
            if interval
            else ""
        ),
    )
    if ref["kind"] == "baseline" and ref.get("resources"):
        head.add_row("vs baseline", "; ".join(ref["resources"]))
    sampling = report["sampling"]
    head.add_row(
        "requests",
        f"{sampling['sent']} sent, {sampling['answered']} answered, {sampling['failed']} failed "
        f"(error rate {_pct(report['error_rate'])})"
        + (f", {sampling['not_sent']} not sent" if sampling["not_sent"] else ""),
    )
    health = report["health"]
    head.add_row("health", _health_line(health))
    head.add_row("guard", _guard_line(report["guard"]))
    head.add_row("host", _host_line(report["host"]))
    limits = report["limits"]
    head.add_row(
        "limits",
        f"≤ {limits['max_in_flight']} in flight, ≤ {limits['max_requests']} requests, "
        f"{limits['per_request_timeout_s']:g} s per request; took {report['duration_s']:.2f} s "
        f"of {report['budget_s']:g} s",
    )
    # the TLS handshake gets its column only for https:// targets (80 columns are tight)
    tls = any(op.get("tls_ms") for op in report["operations"])
    phases = ("connect", "tls", "1st byte") if tls else ("connect", "1st byte")
    ops = Table("operation", "sent", "2xx", "4xx", "5xx", "errors", "p50", "p95", "max",
                *phases, box=None, header_style="bold")  # fmt: skip
    for op in report["operations"]:
        cls, lat_op = op["status_classes"], op["latency_ms"] or {}
        errs = ", ".join(f"{k}={v}" for k, v in op["errors"].items()) or "-"
        timings = [_ms((op["connect_ms"] or {}).get("p50"))]
        if tls:
            timings.append(_ms((op.get("tls_ms") or {}).get("p50")))
        timings.append(_ms((op["first_byte_ms"] or {}).get("p50")))
        ops.add_row(
            op["operation"], str(op["sent"]), str(cls.get("2xx", 0)), str(cls.get("4xx", 0)),
            str(cls.get("5xx", 0)), errs, _ms(lat_op.get("p50")), _ms(lat_op.get("p95")),
            _ms(lat_op.get("max")), *timings,
        )  # fmt: skip
    reasons = Text()
    for r in report["reasons"]:
        reasons.append(f"• [{r['severity']}] {r['message']}\n", style=COLORS.get(r["severity"], ""))
    steps = Text("".join(f"{i}. {s}\n" for i, s in enumerate(report["recommendations"], 1)))
    parts: list[Any] = [head, Text(""), ops, Text("\nwhy", style="bold"), reasons]
    parts += [Text("next steps", style="bold"), steps]
    if report["warnings"]:
        parts.append(Text("".join(f"! {w}\n" for w in report["warnings"]), style="yellow"))
    title = f"triage {report['url']}"
    console.print(Panel(Group(*parts), title=title, border_style=COLORS.get(sev, "white")))


def _health_line(health: dict[str, Any]) -> str:
    if health.get("ok") is None:
        return str(health.get("detail") or "no health endpoint")
    if health.get("status") is not None:
        verdict = "ok" if health["ok"] else "FAILING"
        took = _ms(health.get("total_ms"))
        return f"GET {health['path']} → {health['status']} {verdict} ({took} ms)"
    return f"GET {health['path']} FAILED: {health.get('error')} ({health.get('detail')})"


def _guard_line(guard: dict[str, Any]) -> str:
    if guard.get("present") is None:
        return f"unknown ({guard.get('error')})"
    if not guard.get("present"):
        return "not present"
    lat = guard.get("latency_ms") or {}
    limits = guard.get("limits") or {}
    line = (
        f"mode {guard.get('mode')}, in flight {guard.get('in_flight')}, "
        f"concurrency {describe_limits(limits)}, "
        f"shed {guard.get('shed_total')}, server p95 {_ms(lat.get('p95'))} ms "
        f"(last {guard.get('latency_window_s')} s, n={lat.get('count')})"
    )
    if guard.get("open_breakers"):
        line += f", open breakers: {', '.join(guard['open_breakers'])}"
    return line


def _host_line(host: dict[str, Any]) -> str:
    if not host.get("collected"):
        return str(host.get("reason"))
    mem = host.get("memory") or {}
    line = (
        f"CPU {host.get('cpu_percent')}% of {host.get('cpu_count')} cores, load "
        f"{host.get('load_avg')}, memory {mem.get('percent')}% ({mem.get('pressure')})"
    )
    proc = host.get("process")
    if isinstance(proc, dict):
        growth = proc.get("rss_growth_mb")
        grown = "" if growth is None else (
            f" ({'+' if isinstance(growth, float) and growth >= 0 else ''}"
            f"{growth if not is_unavailable(growth) else '?'} MB)"
        )  # fmt: skip
        ports = proc.get("listening_ports")
        line += (
            f"; pid {proc.get('pid')} {proc.get('name')}: CPU {proc.get('cpu_percent')}%, RSS "
            f"{proc.get('rss_mb')} MB{grown}, {proc.get('threads')} threads, "
            f"{proc.get('fds')} fds{f', ports {ports}' if ports is not None else ''} "
            f"[from {host.get('process_source') or 'unknown'}]"
        )
    elif proc is not None:
        line += f"; process {proc}"
    elif host.get("process_note"):
        line += f"; {host['process_note']}"
    return line


def open_incident_for(report: dict[str, Any], db_url: str | None) -> dict[str, Any]:
    """Open (or reuse) an incident for the verdict and attach the triage as its event."""
    from crisisctl.incidents.db import StoreError, open_database
    from crisisctl.incidents.store import attach_report, open_incident

    severity = Severity.parse(report["severity"])
    if severity is Severity.OK:
        return {"opened": False, "reason": "severity OK: no incident opened"}
    try:
        db = open_database(db_url)
        record = open_incident(
            db, title=f"{severity.name} triage of {report['url']}", severity=severity,
            service=report["url"], dedup_key=f"triage:{report['url']}", source="triage",
        )  # fmt: skip
        attach_report(db, record.id, report, source="triage")
    except StoreError as exc:
        fail(str(exc))
    return {"opened": True, "id": record.id, "reused": bool(getattr(record, "reused", False))}


def exit_code(report: dict[str, Any], fail_on: Severity | None) -> int:
    """0; 3 when unreachable and --fail-on is given; 1 when severity ≥ --fail-on."""
    if fail_on is None:
        return 0
    if not report["reachable"]:
        return EXIT_UNREACHABLE
    return EXIT_CHECK_FAILED if Severity.parse(report["severity"]) >= fail_on else 0


def triage(
    url: str = typer.Argument(
        ..., help="URL of the service (http:// or https://), e.g. http://127.0.0.1:8000/api/x"
    ),
    path: list[str] = typer.Option(None, "--path", help="Operation path to sample (repeatable)."),
    method: str = typer.Option("GET", "--method", help="HTTP method of the operations."),
    body: str = typer.Option(None, "--body", help="JSON request body of the operations."),
    target_ms: float = typer.Option(
        None, "--target-ms", help="Latency target in ms (default 2000)."
    ),
    baseline: str = typer.Option(None, "--baseline", help="Judge against this saved baseline."),
    samples: int = typer.Option(20, "--samples", help="Requests per operation (1-200)."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at most (1-16)."),
    budget: str = typer.Option("15s", "--budget", help="The whole triage finishes within this."),
    timeout: str = typer.Option(None, "--timeout", help="Per-request timeout (default: derived)."),
    pid: int = typer.Option(None, "--pid", help="Process to inspect (default: the listener)."),
    health: str = typer.Option(None, "--health", help="Health path (default: the usual ones)."),
    guard_prefix: str = typer.Option("/_crisis", "--guard-prefix", help="The guard's prefix."),
    no_host: bool = typer.Option(False, "--no-host", help="Skip the host resource evidence."),
    no_local_process: bool = typer.Option(
        False,
        "--no-local-process",
        help="Do not look for the service's process here: its figures come from its guard.",
    ),
    fail_on: str = typer.Option(None, "--fail-on", help="Exit 1 at this severity or worse."),
    incident: bool = typer.Option(False, "--incident", help="Open an incident with the verdict."),
    db: str = typer.Option(None, "--db", help="Incident database URL (default: $CRISISCTL_DB)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Path = typer.Option(None, "--out", help="Also write the JSON report to this file."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """How bad is it? Probe a service (http:// or https://) within a budget and grade it P0-P3."""
    transport = topt.build(header, bearer, basic, resolve, cacert, cert, key, insecure)
    threshold: Severity | None = None
    if fail_on is not None:
        try:
            threshold = Severity.parse(fail_on)
        except ValueError as exc:
            fail(f"--fail-on: {exc}.")
    ref = load_baseline(baseline, db) if baseline is not None else None
    plan = build_plan(
        url, paths=path, method=method, body=body, target_ms=target_ms, baseline=ref,
        samples=samples, concurrency=concurrency, budget=budget, timeout=timeout, pid=pid,
        health=health, guard_prefix=guard_prefix, collect_host=not no_host, transport=transport,
    )  # fmt: skip
    if no_local_process:
        plan = dataclasses.replace(plan, local_process=False)
    report = transport.redact(execute(plan))
    if incident:
        report["incident"] = open_incident_for(report, db)
    write_out(report, out)
    if json_out:
        print_json(report)
    else:
        render(report)
        if report.get("incident", {}).get("opened"):
            inc = report["incident"]
            verb = "reused open" if inc["reused"] else "opened"
            err_console.print(f"{verb} incident {inc['id']}", highlight=False)
    code = exit_code(report, threshold)
    if code:
        raise typer.Exit(code)
