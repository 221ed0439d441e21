"""`crisisctl validate URL`: the seeds' phase-5 validation suite against a service (any host).

Runs monitoring, error handling, performance baseline, load resilience, resource utilization,
rate limiting and concurrency control checks (see `crisisctl.validate`), prints each as it
ends and a summary, or the JSON report with ``--json``. Exit codes: 0 the success rate reaches
``--required-rate``, 1 it does not, 2 bad usage or input, 3 the service gave no HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from crisisctl.cli import transport_options as topt
from crisisctl.cli.output import EXIT_CHECK_FAILED, EXIT_UNREACHABLE, console, fail, print_json
from crisisctl.units import parse_duration
from crisisctl.validate import (
    CHECK_NAMES,
    DEFAULT_REQUIRED_RATE,
    CheckResult,
    ResourceLimits,
    Unreachable,
    ValidateOptions,
    run_validation,
)

_SKIP_HELP = f"Check(s) not to run: {', '.join(CHECK_NAMES)}."


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `coro` on a fresh event loop, uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _skips(values: list[str]) -> frozenset[str]:
    """``--skip a --skip b,c`` → {a, b, c} (dashes accepted for underscores)."""
    return frozenset(
        item.strip().replace("-", "_")
        for value in values
        for item in value.split(",")
        if item.strip()
    )


def print_check(result: CheckResult) -> None:
    """One line per check as it ends."""
    if result.skipped:
        mark = "[dim]- skip[/]"
    elif result.passed:
        mark = "[bold green]✓ pass[/]"
    else:
        mark = "[bold red]✗ FAIL[/]"
    console.print(
        f"{mark} {result.name:<21} {result.duration_ms / 1000.0:6.2f} s  {result.summary}",
        highlight=False,
        soft_wrap=True,
    )


def print_summary(report: dict[str, Any]) -> None:
    """The closing line: counts, success rate against the required rate, verdict.

    Skipped checks are neither passes nor failures: the rate counts only the checks that ran.
    """
    rate = report["success_rate"]
    verdict = "[bold green]VALIDATED[/]" if report["passed"] else "[bold red]NOT VALIDATED[/]"
    skipped = report["checks_skipped"]
    skip_text = f"{skipped} skipped (not counted)" if skipped else "0 skipped"
    rate_text = f"success rate {rate:.1f} %" if rate is not None else "no check ran"
    console.print(
        f"{report['checks_passed']} passed, {report['checks_failed']} failed, "
        f"{skip_text}: {rate_text} "
        f"(required {report['required_rate']:g} %) in {report['duration_ms'] / 1000.0:.1f} s "
        f"→ {verdict}",
        highlight=False,
        soft_wrap=True,
    )


def validate(
    url: str = typer.Argument(
        ..., help="URL of the service, e.g. https://api.example/ (any host)."
    ),
    path: str = typer.Option(
        "", "--path", help="Path for the baseline and the load [default: the URL's path]."
    ),
    burst_path: str = typer.Option(
        None,
        "--burst-path",
        help="The protected operation, '/path' or 'POST /path': rate-limit burst and "
        "error cases [default: --path].",
    ),
    concurrency_path: str = typer.Option(
        None,
        "--concurrency-path",
        help="'/path' or 'METHOD /path' for the parallel burst [default: --burst-path].",
    ),
    target_ms: float = typer.Option(2000.0, "--target-ms", help="Baseline p95 target in ms."),
    baseline_requests: int = typer.Option(20, "--baseline-requests", help="Baseline requests."),
    burst: int = typer.Option(200, "--burst", help="Requests in each burst."),
    concurrency: int = typer.Option(20, "--concurrency", help="Connections of the parallel burst."),
    load_rate: float = typer.Option(50.0, "--load-rate", help="Load resilience: requests/s."),
    load_duration: str = typer.Option("10s", "--load-duration", help="Load resilience: duration."),
    timeout: str = typer.Option("5s", "--timeout", help="Per-request timeout."),
    budget: str = typer.Option("60s", "--budget", help="Time limit for the whole suite."),
    required_rate: float = typer.Option(
        DEFAULT_REQUIRED_RATE, "--required-rate", help="Percent of checks that must pass."
    ),
    prefix: str = typer.Option("/_crisis", "--prefix", help="The guard's control prefix."),
    skip: list[str] = typer.Option([], "--skip", help=_SKIP_HELP),
    max_cpu_percent: float = typer.Option(
        90.0, "--max-cpu-percent", help="The service process's CPU limit, % of one core."
    ),
    max_memory_percent: float = typer.Option(
        90.0, "--max-memory-percent", help="Host memory limit, %."
    ),
    max_rss_mb: float = typer.Option(
        2048.0, "--max-rss-mb", help="The service process's peak RSS limit, MB."
    ),
    no_local_process: bool = typer.Option(
        False,
        "--no-local-process",
        help="Do not look for the service's process here: use its guard's process figures.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
    out: Path = typer.Option(None, "--out", help="Write the JSON report to this file."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Validate a service (http:// or https://) with the seeds' phase-5 checks and evidence."""
    transport = topt.build(header, bearer, basic, resolve, cacert, cert, key, insecure)
    target = transport.target(url, "crisisctl validate")
    transport.check(target)
    try:
        options = ValidateOptions(
            path=path,
            burst_path=burst_path,
            concurrency_path=concurrency_path,
            target_ms=target_ms,
            baseline_requests=baseline_requests,
            burst=burst,
            concurrency=concurrency,
            load_rate=load_rate,
            load_duration_s=parse_duration(load_duration),
            timeout_s=parse_duration(timeout),
            budget_s=parse_duration(budget),
            required_rate=required_rate,
            prefix=prefix,
            skip=_skips(skip),
            limits=ResourceLimits(max_cpu_percent, max_memory_percent, max_rss_mb),
            local_process=not no_local_process,
        )
    except ValueError as exc:
        fail(str(exc))
    if not json_out:
        console.print(f"validating {url} (budget {options.budget_s:g} s)", highlight=False)
    on_check = None if json_out else print_check
    coro = run_validation(url, options, on_check=on_check, target=target)
    try:
        report = _run(coro)
    except ValueError as exc:
        fail(str(exc))
    except Unreachable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    finally:
        coro.close()
    report = transport.redact(report)
    if out is not None:
        try:
            out.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            fail(f"could not write the report to {out} ({exc.strerror or exc}).")
    if json_out:
        print_json(report)
    else:
        print_summary(report)
    if not report["passed"]:
        raise typer.Exit(EXIT_CHECK_FAILED)
