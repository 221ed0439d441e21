"""`crisisctl baseline save|list|show|delete`: healthy profiles that triage compares against.

``save NAME URL`` runs the triage probes against a healthy service in ``--rounds`` rounds, one
every ``--every`` (default 10, 1 s apart), and stores the profile (per-operation p50/p95/p99/max,
error rate and every round's latencies, resource levels) in the incident database with a
validity period (default 24 h); ``crisisctl triage URL --baseline NAME`` then judges each
operation's p95 against the stored one, within the spread of the stored rounds, and warns once
the baseline has expired.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.table import Table

from crisisctl.cli import transport_options as topt
from crisisctl.cli.output import EXIT_UNREACHABLE, console, fail, print_json
from crisisctl.cli.triage import build_plan
from crisisctl.incidents.baselines import (
    Baseline,
    delete_baseline,
    get_baseline,
    list_baselines,
    save_baseline,
)
from crisisctl.incidents.db import Database, StoreError, open_database
from crisisctl.probe.profile import ProfileError, profile_from_reports
from crisisctl.probe.triage import measure_baseline
from crisisctl.units import parse_duration

app = typer.Typer(help="Save and manage healthy baselines for triage.", no_args_is_help=True)

#: refuse to call a service with at least this error rate "healthy"
MAX_HEALTHY_ERROR_RATE = 0.01
MAX_ROUNDS = 50
MAX_EVERY_S = 600.0


def _unhealthy(report: dict[str, Any]) -> bool:
    return not report["available"] or (report["error_rate"] or 0.0) >= MAX_HEALTHY_ERROR_RATE


def _db(db_url: str | None) -> Database:
    try:
        return open_database(db_url)
    except StoreError as exc:
        fail(str(exc))


def _as_dict(baseline: Baseline, *, with_profile: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    ops = (baseline.profile.get("operations") or {}) if isinstance(baseline.profile, dict) else {}
    data: dict[str, Any] = {
        "name": baseline.name,
        "url": baseline.url,
        "created_at": baseline.created_at.isoformat(),
        "expires_at": baseline.expires_at.isoformat(),
        "expired": baseline.expired(now),
        # rounds of latencies kept for triage's spread; None: saved before the rounds
        "rounds": baseline.profile.get("rounds") if isinstance(baseline.profile, dict) else None,
        "operations": {
            name: {
                "p50": op.get("p50"),
                "p95": op.get("p95"),
                "p99": op.get("p99"),
                "error_rate": op.get("error_rate"),
            }
            for name, op in ops.items()
            if isinstance(op, dict)
        },
    }
    if with_profile:
        data["profile"] = baseline.profile
    return data


@app.command()
def save(
    name: str = typer.Argument(..., help="Name of the baseline (replaces one of that name)."),
    url: str = typer.Argument(..., help="URL of the healthy service (http:// or https://)."),
    path: list[str] = typer.Option(None, "--path", help="Operation path to sample (repeatable)."),
    method: str = typer.Option("GET", "--method", help="HTTP method of the operations."),
    body: str = typer.Option(None, "--body", help="JSON request body of the operations."),
    samples: int = typer.Option(
        20, "--samples", help="Requests per operation in each round (1-200)."
    ),
    rounds: int = typer.Option(10, "--rounds", help="Measurement rounds, spread over time (1-50)."),
    every: str = typer.Option("1s", "--every", help="A round starts every this long."),
    concurrency: int = typer.Option(4, "--concurrency", help="Requests in flight at most (1-16)."),
    budget: str = typer.Option("15s", "--budget", help="Each round finishes within this."),
    pid: int = typer.Option(None, "--pid", help="Process whose resources to record."),
    valid_for: str = typer.Option("24h", "--valid-for", help="Validity period, e.g. 24h, 90m."),
    db: str = typer.Option(None, "--db", help="Incident database URL (default: $CRISISCTL_DB)."),
    json_out: bool = typer.Option(False, "--json", help="Print the saved baseline as JSON."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Measure a healthy service and save its profile as baseline NAME."""
    try:
        validity = parse_duration(valid_for)
    except ValueError as exc:
        fail(f"--valid-for: {exc}")
    if validity <= 0:
        fail("--valid-for must be a positive duration such as 24h.")
    if not 1 <= rounds <= MAX_ROUNDS:
        fail(f"--rounds must be between 1 and {MAX_ROUNDS}, not {rounds}.")
    try:
        every_s = parse_duration(every)
    except ValueError as exc:
        fail(f"--every: {exc}")
    if not 0 <= every_s <= MAX_EVERY_S:
        fail(f"--every must be between 0 s and {MAX_EVERY_S:g} s, such as 1s.")
    transport = topt.build(header, bearer, basic, resolve, cacert, cert, key, insecure)
    plan = build_plan(
        url, paths=path, method=method, body=body, target_ms=None, baseline=None,
        samples=samples, concurrency=concurrency, budget=budget, timeout=None, pid=pid,
        health=None, guard_prefix="/_crisis", collect_host=True, transport=transport,
        tool="crisisctl baseline",
    )  # fmt: skip
    database = _db(db)  # fail early on an unusable database, before probing
    reports = asyncio.run(measure_baseline(plan, rounds, every_s, stop_when=_unhealthy))
    reports = [transport.redact(report) for report in reports]
    last = reports[-1]
    if not last["reachable"]:
        fail(f"{url} could not be reached, so there is nothing healthy to save.", EXIT_UNREACHABLE)
    worst_rate = max((r["error_rate"] or 0.0) for r in reports)
    if not last["available"] or worst_rate >= MAX_HEALTHY_ERROR_RATE:
        fail(
            f"{url} does not look healthy (available: {last['available']}, error rate "
            f"{worst_rate * 100:.1f}%): save a baseline while the service is healthy."
        )
    try:
        profile = profile_from_reports(reports)
    except ProfileError as exc:
        fail(str(exc))
    try:
        saved = save_baseline(
            database, name=name, url=url, profile=profile, valid_for=timedelta(seconds=validity)
        )
    except StoreError as exc:
        fail(str(exc))
    data = _as_dict(saved, with_profile=True)
    if json_out:
        print_json(data)
        return
    console.print(
        f"saved baseline [bold]{saved.name}[/] for {saved.url} ({data['rounds']} rounds), valid "
        f"until {saved.expires_at.isoformat()}",
        highlight=False,
    )
    _print_operations(data)


def _print_operations(data: dict[str, Any]) -> None:
    table = Table("operation", "p50 ms", "p95 ms", "p99 ms", "error rate")
    for op_name, op in data["operations"].items():
        rate = op.get("error_rate")
        table.add_row(
            op_name, f"{op['p50']:.1f}", f"{op['p95']:.1f}", f"{op['p99']:.1f}",
            f"{rate * 100:.1f}%" if isinstance(rate, int | float) else "-",
        )  # fmt: skip
    console.print(table)


@app.command("list")
def list_(
    db: str = typer.Option(None, "--db", help="Incident database URL (default: $CRISISCTL_DB)."),
    json_out: bool = typer.Option(False, "--json", help="Print the baselines as JSON."),
) -> None:
    """List the saved baselines."""
    try:
        items = [_as_dict(b, with_profile=False) for b in list_baselines(_db(db))]
    except StoreError as exc:
        fail(str(exc))
    if json_out:
        print_json(items)
        return
    if not items:
        console.print("no baselines saved yet: `crisisctl baseline save NAME URL` records one.")
        return
    table = Table("name", "url", "operations", "created", "expires")
    for item in items:
        expires = item["expires_at"] + (" [red](expired)[/]" if item["expired"] else "")
        table.add_row(item["name"], item["url"], str(len(item["operations"])), item["created_at"],
                      expires)  # fmt: skip
    console.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="Name of the baseline."),
    db: str = typer.Option(None, "--db", help="Incident database URL (default: $CRISISCTL_DB)."),
    json_out: bool = typer.Option(False, "--json", help="Print the baseline as JSON."),
) -> None:
    """Show one baseline's profile."""
    try:
        found = get_baseline(_db(db), name)
    except StoreError as exc:
        fail(str(exc))
    if found is None:
        fail(
            f"there is no baseline named {name!r}: `crisisctl baseline list` shows the saved ones."
        )
    data = _as_dict(found, with_profile=True)
    if json_out:
        print_json(data)
        return
    state = "[red]expired[/]" if data["expired"] else "valid"
    console.print(
        f"[bold]{data['name']}[/] {data['url']}: created {data['created_at']}, {state} until "
        f"{data['expires_at']}",
        highlight=False,
    )
    _print_operations(data)
    resources = found.profile.get("resources") if isinstance(found.profile, dict) else None
    if isinstance(resources, dict):
        known = ", ".join(f"{k} {v}" for k, v in resources.items() if v is not None)
        console.print(f"resources: {known or 'none recorded'}", highlight=False)


@app.command()
def delete(
    name: str = typer.Argument(..., help="Name of the baseline."),
    db: str = typer.Option(None, "--db", help="Incident database URL (default: $CRISISCTL_DB)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Delete a baseline."""
    try:
        deleted = delete_baseline(_db(db), name)
    except StoreError as exc:
        fail(str(exc))
    if not deleted:
        fail(
            f"there is no baseline named {name!r}: `crisisctl baseline list` shows the saved ones."
        )
    if json_out:
        print_json({"name": name, "deleted": True})
    else:
        console.print(f"deleted baseline {name}", highlight=False)
