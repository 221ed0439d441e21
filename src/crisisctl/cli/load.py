"""`crisisctl load SCENARIO.yaml | URL`: drive a service, judge thresholds, report.

A scenario file (YAML, see `crisisctl.load.scenario`) or the quick form on a URL: ``--rate R``
(open model, ``--arrival constant|poisson``), ``--users N`` (closed model), ``--stage
10s:100`` ramps, ``-H``, ``--body``, ``--threshold "p95 < 300ms"``. ``--processes N`` runs N
engine processes that split one schedule and whose histograms merge exactly; ``--coordinator
redis://… --workers N`` hands the same shares to N ``crisisctl load-worker`` processes on other
hosts (`crisisctl.load.distributed`) and merges what they stream back. An open-model
run that dropped more than 1 % of its scheduled arrivals says so in red, and fails the
default ``dropped_rate < 1%`` threshold unless it sets its own. A live view (elapsed, rps,
p50/p95/p99, errors) shows on a terminal unless ``--json``. The result is a table, JSON
(``--json``), a JSON file (``--out``) and a self-contained HTML file (``--html``). Exit
codes: 0 ok, 1 a threshold failed (or the run was interrupted), 2 bad usage or input, 3 the
target could not be reached at all (a certificate problem included).

Any host, http:// or https://: the shared transport flags (`crisisctl.cli.transport_options`:
``-H``, ``--bearer``, ``--basic``, ``--resolve``, ``--cacert``, ``--cert/--key``,
``--insecure``) apply to the quick form and to scenario files alike (they add to the scenario's
headers and override its ``transport:``); secrets are redacted from every report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from rich.table import Table

from crisisctl.cli import transport_options as topt
from crisisctl.cli.output import EXIT_CHECK_FAILED, EXIT_UNREACHABLE, console, fail, print_json
from crisisctl.load.abort import parse_abort_on
from crisisctl.load.plan import RunError, check_scenario, compile_operations
from crisisctl.load.preflight import describe_run
from crisisctl.load.processes import (
    LiveStats,
    RunOutcome,
    default_processes,
    run_scenario,
    run_sync,
)
from crisisctl.load.report import build_report, dropped_warning
from crisisctl.load.scenario import (
    OpenModel,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_duration,
)
from crisisctl.load.target import Target, parse_url
from crisisctl.load.thresholds import (
    Threshold,
    ThresholdError,
    evaluate,
    parse_threshold,
    with_defaults,
)
from crisisctl.transport.headers import parse_header
from crisisctl.transport.settings import TransportSpec

__all__ = ["load", "parse_duration", "render", "run_async"]

T = TypeVar("T")
_OPTIONS = {
    "rate": "--rate", "users": "--users", "duration": "--duration", "stages": "--stage",
    "connections": "--connections", "ramp_up": "--ramp-up", "think": "--think",
    "timeout": "--timeout", "method": "--method", "headers": "-H", "body": "--body",
    "transport": "--resolve/--cacert/--cert/--key",
    "arrival": "--arrival",
}  # fmt: skip


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a fresh event loop, uvloop's when it is installed."""
    return run_sync(coro)


# -- the quick form ---------------------------------------------------------------------------
def _stage(text: str) -> dict[str, Any]:
    duration, sep, target = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return {"duration": parse_duration(duration), "target": float(target)}
    except ValueError:
        raise ValueError(
            f"--stage {text!r} is not a stage: write DURATION:TARGET, e.g. --stage 10s:100."
        ) from None


def quick_scenario(url: str, opts: dict[str, Any]) -> Scenario:
    """The `Scenario` of ``crisisctl load URL …``; ValueError names the option at fault."""
    target = parse_url(url, tool="crisisctl load")
    parts = urlsplit(url)
    path = target.path.replace("{", "{{").replace("}", "}}")
    stages = [_stage(s) for s in opts["stage"] or []]
    timeout_s = parse_duration(opts["timeout"] or "10s")
    model: dict[str, Any]
    if opts["rate"] is not None:
        model = {"type": "open", "rate": opts["rate"], "connections": opts["connections"] or 64}
        model["arrival"] = opts.get("arrival") or "constant"
    elif opts.get("arrival") is not None:
        raise ValueError("--arrival applies to the open model (--rate), not to --users.")
    else:
        think = parse_duration(opts["think"] or "0s")
        dist = opts["think_dist"] or "constant"
        model = {"type": "closed", "users": opts["users"]}
        if dist == "uniform":
            model["think"] = {"distribution": "uniform", "min": 0.0, "max": 2 * think}
        else:
            model["think"] = {"distribution": dist, "value": think, "mean": think}
        if not stages:
            model["ramp_up"] = parse_duration(opts["ramp_up"] or "0s")
    if stages:
        model["stages"] = stages
    else:
        model["duration"] = parse_duration(opts["duration"] or "10s")
    body = opts["body"]
    if opts["body_file"] is not None:
        if body is not None:
            raise ValueError("give either --body or --body-file, not both.")
        try:
            body = Path(opts["body_file"]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read --body-file {opts['body_file']} ({exc}).") from None
    operation: dict[str, Any] = {
        "name": f"{(opts['method'] or 'GET').upper()} {target.path}",
        "method": opts["method"] or "GET",
        "path": path,
        "headers": {
            name: value.replace("{", "{{").replace("}", "}}")
            for name, value in (parse_header(h) for h in opts.get("header") or [])
        },
    }
    if body is not None:
        operation["body"] = body.replace("{", "{{").replace("}", "}}")
    data = {
        "name": url,
        "base_url": f"{parts.scheme}://{parts.netloc}",
        "timeout": timeout_s,
        "model": model,
        "operations": [operation],
        "seed": opts["seed"],
    }
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [p for p in error["loc"] if isinstance(p, str) and p in _OPTIONS]
        option = _OPTIONS[loc[-1]] if loc else "the options"
        message = str(error["msg"]).removeprefix("Value error, ").rstrip(".")
        raise ValueError(f"{option}: {message}.") from None


# -- live view and tables ---------------------------------------------------------------------
def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def live_view(live: LiveStats) -> Table:
    """The live panel: elapsed, rps, requests, failures, p50/p95/p99 so far (and per op)."""
    table = Table("scope", "elapsed", "rps", "requests", "failures", "p50 ms", "p95 ms", "p99 ms")
    rows: list[tuple[str, Any]] = [("all", live.total)]
    if len(live.operations) > 1:
        rows += [(name, live.ops[name]) for name in live.operations if name in live.ops]
    for name, stats in rows:
        p50, p95, p99 = stats.latency.percentiles((50.0, 95.0, 99.0))
        failed = stats.errors + stats.unexpected
        share = f" ({failed / stats.requests:.1%})" if stats.requests else ""
        table.add_row(
            name,
            f"{live.elapsed_s:.0f}/{live.duration_s:g} s" if name == "all" else "",
            str(live.last_rps) if name == "all" else "",
            str(stats.requests), f"{failed}{share}",
            _ms(p50 / 1000), _ms(p95 / 1000), _ms(p99 / 1000),
        )  # fmt: skip
    return table


def render(data: dict[str, Any]) -> None:
    """A short human view of a report."""
    model = data["model"]
    head = f"{data['url']}: {model} model, {data['duration_s']:g} s"
    if model == "open":
        head += f", target {data['target_rate']:g} req/s on {data['connections']} connections"
    else:
        head += f", {data['users']} users"
    dist = data.get("distributed")
    if dist:
        head += f", {len(dist['workers'])} workers via {dist['coordinator']}"
    elif data.get("processes", 1) > 1:
        head += f", {data['processes']} processes"
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
    table.add_row("unexpected status", str(data.get("unexpected_status", 0)))
    table.add_row("error rate", f"{data.get('error_rate', 0.0):.2%}")
    warning = dropped_warning(data)
    if model == "open":
        table.add_row("late starts", str(data["late_starts"]))
        scheduled = data.get("scheduled", data["requests"] + data["dropped"])
        share = f" ({data.get('dropped_rate', 0.0):.2%})" if scheduled else ""
        dropped = f"{data['dropped']} of {scheduled}{share}"
        table.add_row("dropped arrivals", f"[bold red]{dropped}[/]" if warning else dropped)
        if data.get("journeys") is not None:
            table.add_row("journeys started", str(data["journeys"]))
    table.add_row("bytes received", str(data["bytes_received"]))
    if data.get("connects"):
        setup = f"{data['connects']}, connect {_ms(data.get('connect_ms_mean'))} ms"
        if data.get("tls_ms_mean") is not None:
            setup += f" + TLS {_ms(data['tls_ms_mean'])} ms"
        table.add_row("connections (mean set-up)", setup)
    console.print(table)
    lat = Table("latency ms", "p50", "p90", "p95", "p99", "p99.9", "max")
    rows = [("corrected" if model == "open" else "latency", data["latency_ms"])]
    if data.get("latency_uncorrected_ms") is not None:
        rows.append(("uncorrected", data["latency_uncorrected_ms"]))
    operations = data.get("operations") or {}
    if len(operations) > 1:
        rows += [(name, op["latency_ms"]) for name, op in operations.items()]
    for name, summary in rows:
        lat.add_row(name, *(_ms(summary[k]) for k in ("p50", "p90", "p95", "p99", "p999", "max")))
    console.print(lat)
    if len(operations) > 1:
        ops = Table(
            data.get("grouping", "operation"), "requests", "req/s", "error rate", "statuses"
        )
        for name, op in operations.items():
            statuses = ", ".join(f"{k}={v}" for k, v in op["status_counts"].items()) or "-"
            ops.add_row(
                name, str(op["requests"]), f"{op['requests_per_second']:.1f}",
                f"{op['error_rate']:.2%}", statuses,
            )  # fmt: skip
        console.print(ops)
    if data.get("thresholds"):
        th = Table("threshold", "scope", "value", "result")
        for t in data["thresholds"]:
            value = t["value"]
            text = "no data" if value is None else f"{value:g}"
            if value is not None and t["unit"] == "fraction":
                text = f"{value:.3%}"
            elif value is not None and t["unit"] == "ms":
                text = f"{value:.2f} ms"
            verdict = "[green]pass[/]" if t["passed"] else "[bold red]FAIL[/]"
            expression = t["expression"] + (" (default)" if t.get("default") else "")
            th.add_row(expression, t["operation"] or "all", text, verdict)
        console.print(th)
    if warning:
        console.print(f"[bold red]dropped arrivals:[/] [red]{warning}[/]", highlight=False)
    if data.get("aborted"):
        console.print(f"[bold red]stopped early:[/] {data['aborted']}", highlight=False)
    for entry in (dist or {}).get("lost", []):
        console.print(
            f"[bold red]lost worker:[/] {entry['worker']} ({entry['host']}), {entry['share']}: "
            f"{entry['reason']}; {entry['sent_requests']} requests reported sent"
            + (
                f", {entry['unsent_arrivals']} arrivals unsent"
                if "unsent_arrivals" in entry
                else ""
            ),
            highlight=False,
        )


# -- the command ------------------------------------------------------------------------------
def _checked_target(scenario: Scenario, transport: topt.Transport) -> Target:
    """The target the preflight checks: the scenario's base URL with the first operation's
    path, or the journey's first step's (a name that does not resolve or a certificate problem
    exits 3 before the run)."""
    first = scenario.operations[0].path if scenario.operations else scenario.steps[0].path
    path = first if "{" not in first else "/"
    return topt.Transport(scenario.transport, transport.auth).target(
        scenario.base_url + path, "crisisctl load"
    )


def _with_transport(scenario: Scenario, transport: topt.Transport) -> Scenario:
    """`scenario` with the shared flags: their headers added (literal: braces escaped for the
    templates), their TLS options and pins instead of the scenario's own when any is given."""
    update: dict[str, Any] = {}
    if transport.auth.headers:
        escaped = {
            name: value.replace("{", "{{").replace("}", "}}")
            for name, value in transport.auth.headers.items()
        }
        update["headers"] = {**scenario.headers, **escaped}
    if transport.spec != TransportSpec():
        update["transport"] = transport.spec
    return scenario.model_copy(update=update) if update else scenario


def _scenario_from(
    target: str, opts: dict[str, Any], transport: topt.Transport
) -> tuple[Scenario, Path, str]:
    if "://" in target:
        if opts["rate"] is None and opts["users"] is None:
            fail("give --rate (open model) or --users (closed model) with a URL.")
        if opts["rate"] is not None and opts["users"] is not None:
            fail("give exactly one of --rate (open model) or --users (closed model).")
        scenario = _with_transport(quick_scenario(target, opts), transport)
        compile_operations(scenario, Path.cwd(), "the command line")
        return scenario, Path.cwd(), "command line"
    given = [_OPTIONS.get(k, f"--{k.replace('_', '-')}") for k, v in opts.items() if v]
    if given:
        fail(f"{', '.join(given)} only apply to a URL; a scenario file sets them itself.")
    path = Path(target)
    if not path.is_file():
        fail(f"{target} is neither a scenario file nor an http:// or https:// URL.")
    scenario, root = load_scenario(path)
    scenario = _with_transport(scenario, transport)
    check_scenario(scenario, path.parent, str(path), root)
    return scenario, path.parent, str(path)


def _write(path: Path, text: str, what: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"could not write the {what} to {path} ({exc.strerror or exc}).")


def _lost_text(lost: list[dict[str, Any]]) -> str:
    parts = []
    for entry in lost:
        unsent = entry.get("unsent_arrivals")
        what = (
            f"{unsent} of {entry['planned_arrivals']} arrivals unsent"
            if unsent is not None
            else f"{entry['users_lost']} users stopped"
        )
        parts.append(f"{entry['worker']} ({entry['reason']}; {what})")
    return "; ".join(parts)


def _runner(
    scenario: Scenario,
    base_dir: Path,
    thresholds: list[Threshold],
    processes: int | None,
    coordinator: str | None,
    workers: int | None,
    workers_timeout: str | None,
) -> Callable[[Callable[[LiveStats], None] | None], RunOutcome]:
    """How this run runs: local processes, or workers behind a coordinator's Redis."""
    if coordinator is None:
        if workers is not None or workers_timeout is not None:
            fail("--workers and --workers-timeout apply to a distributed run (--coordinator).")
        return lambda update: run_scenario(
            scenario, base_dir, processes=processes or default_processes(),
            thresholds=thresholds, on_update=update,
        )  # fmt: skip
    if processes is not None:
        fail(
            "--processes applies to a local run; with --coordinator give it to each worker "
            "(crisisctl load-worker URL --processes N)."
        )
    if workers is None or workers < 1:
        fail("give --workers N (at least 1) with --coordinator: how many workers to wait for.")
    from crisisctl.load.distributed import run_distributed  # redis only for distributed runs

    try:
        wait_s = parse_duration(workers_timeout or "30s")
    except ValueError:
        fail(f"--workers-timeout {workers_timeout!r} is not a duration: write e.g. 30s or 2m.")
    return lambda update: run_distributed(
        scenario, base_dir, coordinator, workers=workers, wait_s=wait_s,
        thresholds=thresholds, on_update=update,
    )  # fmt: skip


def load(
    target: str = typer.Argument(
        ..., help="A scenario file (YAML) or a URL, e.g. https://api.example/ (any host)"
    ),
    rate: float = typer.Option(None, "--rate", help="URL: open model, requests per second."),
    users: int = typer.Option(None, "--users", help="URL: closed model, virtual users."),
    duration: str = typer.Option(None, "--duration", help="URL: 30s, 2m, 500ms (default 10s)."),
    stage: list[str] = typer.Option(None, "--stage", help="URL: ramp, e.g. 10s:100 (repeat)."),
    connections: int = typer.Option(None, "--connections", help="URL, open model: pool size."),
    timeout: str = typer.Option(None, "--timeout", help="URL: per-request timeout (10s)."),
    method: str = typer.Option(None, "--method", help="URL: HTTP method (GET)."),
    body: str = typer.Option(None, "--body", help="URL: request body."),
    body_file: Path = typer.Option(None, "--body-file", help="URL: request body from a file."),
    ramp_up: str = typer.Option(None, "--ramp-up", help="URL, closed model: spread starts."),
    think: str = typer.Option(None, "--think", help="URL, closed model: think time."),
    think_dist: str = typer.Option(
        None, "--think-dist", help="URL, closed: constant, uniform (0..2×think), exponential."
    ),
    arrival: str = typer.Option(
        None, "--arrival", help="URL, open model: constant (default) or poisson arrivals."
    ),
    seed: int = typer.Option(
        None, "--seed", help="URL: random seed (template values, think, poisson arrivals)."
    ),
    threshold: list[str] = typer.Option(
        None,
        "--threshold",
        help="Pass/fail, e.g. 'p95 < 300ms', 'error_rate < 1%' (repeat); open-model runs get "
        "'dropped_rate < 1%' unless they set a dropped_rate threshold.",
    ),
    processes: int = typer.Option(
        None, "--processes", help="Engine processes (default: cores − 1, at least 1)."
    ),
    max_requests: int = typer.Option(
        None, "--max-requests", help="Stop once this many requests have started (exact)."
    ),
    abort_on: list[str] = typer.Option(
        None,
        "--abort-on",
        help="Stop a run hurting the target, e.g. 'error_rate > 50% for 10s' (repeat).",
    ),
    coordinator: str = typer.Option(
        None,
        "--coordinator",
        help="Distributed: redis://[:PASSWORD@]HOST:PORT/DB where `crisisctl load-worker` "
        "workers registered; they send the load, this process merges their figures.",
    ),
    workers: int = typer.Option(None, "--workers", help="Distributed: workers to wait for."),
    workers_timeout: str = typer.Option(
        None, "--workers-timeout", help="Distributed: how long to wait for them (30s)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
    out: Path = typer.Option(None, "--out", help="Write the JSON report to this file."),
    html: Path = typer.Option(None, "--html", help="Write the HTML report to this file."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Load a service (any host, http:// or https://) from a scenario file, or a URL with
    --rate or --users."""
    transport = topt.build(header, bearer, basic, resolve, cacert, cert, key, insecure)
    opts = {
        "rate": rate, "users": users, "duration": duration, "stage": stage,
        "connections": connections, "timeout": timeout, "method": method,
        "body": body, "body_file": body_file, "ramp_up": ramp_up, "think": think,
        "think_dist": think_dist, "seed": seed, "arrival": arrival,
    }  # fmt: skip
    if max_requests is not None and max_requests < 1:
        fail(f"--max-requests must be at least 1, not {max_requests}.")
    try:
        scenario, base_dir, source = _scenario_from(target, opts, transport)
        if max_requests is not None:
            scenario = scenario.model_copy(update={"max_requests": max_requests})
        if abort_on:
            rules = [parse_abort_on(text) for text in abort_on]  # a bad rule: one sentence
            scenario = scenario.model_copy(
                update={"abort_on": scenario.abort_on + [r.text for r in rules]}
            )
        thresholds: list[Threshold] = scenario.all_thresholds()
        thresholds += [parse_threshold(text) for text in threshold or []]
        thresholds = with_defaults(thresholds, isinstance(scenario.model, OpenModel))
    except ScenarioError as exc:
        fail(str(exc))
    except (ThresholdError, ValueError) as exc:
        fail(str(exc))
    if processes is not None and processes < 1:
        fail(f"--processes must be at least 1, not {processes}.")
    summary = describe_run(scenario.base_url, scenario.model, scenario.max_requests)
    if summary is not None:  # a host not on this machine: say what is about to be sent
        typer.echo(summary, err=True)
    if coordinator is None:  # (distributed: the workers reach the target, not this host)
        topt.Transport(scenario.transport, transport.auth).check(
            _checked_target(scenario, transport)
        )
    run = _runner(scenario, base_dir, thresholds, processes, coordinator, workers, workers_timeout)
    started = datetime.now(UTC)
    show = not json_out and console.is_terminal
    try:
        if show:
            from rich.console import Group
            from rich.live import Live
            from rich.text import Text

            with Live(Text("starting…"), console=console, refresh_per_second=4) as view:
                outcome = run(lambda s: view.update(Group(live_view(s))))
        else:
            outcome = run(None)
    except RunError as exc:
        fail(str(exc), exc.code)
    result = outcome.result
    verdicts = evaluate(thresholds, result.scope, outcome.aborted_by)
    report = build_report(
        result, scenario=outcome.scenario, source=source, thresholds=verdicts,
        started_at=started, finished_at=datetime.now(UTC),
    )  # fmt: skip
    if outcome.distributed is not None:
        report["distributed"] = outcome.distributed
    report = transport.redact(report, scenario.secrets)
    if out is not None:
        _write(out, json.dumps(report, indent=2) + "\n", "JSON report")
    if html is not None:
        from crisisctl.load.html_report import render_html  # jinja2: only for --html

        _write(html, render_html(report), "HTML report")
    if json_out:
        print_json(report)
    else:
        render(report)
    if result.unreachable:
        fail(
            f"{result.url} could not be reached: all {result.requests} requests were refused; "
            "is the service running?",
            EXIT_UNREACHABLE,
        )
    lost = (outcome.distributed or {}).get("lost") or []
    if lost:
        fail(
            f"{len(lost)} worker(s) lost mid-run, their share partly unsent: {_lost_text(lost)}.", 1
        )
    failed = [v.threshold.label() for v in verdicts if not v.passed]
    if failed:
        fail(f"{len(failed)} of {len(verdicts)} thresholds failed: {', '.join(failed)}.", 1)
    if result.aborted == "interrupted":
        fail("the run was interrupted before its end.", EXIT_CHECK_FAILED)
