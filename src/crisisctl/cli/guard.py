"""`crisisctl guard status URL`, `crisisctl guard mode URL MODE` and
`crisisctl guard cache-invalidate URL PREFIX`: talk to a running guard.

All take the transport flags every command that sends traffic shares
(`crisisctl.cli.transport_options`: ``-H``, ``--bearer``/``--basic``, ``--resolve``,
``--cacert``, ``--cert/--key``, ``--insecure``) and ``--token`` (the guard's token, or
``env:NAME``), a secret that is redacted from every output. The calls themselves live in
`crisisctl.probe.guard_mode` (shared with watch's ``guard_mode`` action).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, NoReturn

import typer
from rich.table import Table

from crisisctl.cli import transport_options as topt
from crisisctl.cli.output import EXIT_UNREACHABLE, EXIT_USAGE, console, fail, print_json
from crisisctl.probe import guard_mode
from crisisctl.probe.guard import concurrency_limits, describe_limits
from crisisctl.transport.headers import Auth, Redactor, env_value
from crisisctl.transport.target import Target

app = typer.Typer(help="Inspect and steer the guard of a running service.", no_args_is_help=True)

MODES = guard_mode.MODES


def control_url(url: str, prefix: str, endpoint: str) -> str:
    """`URL` may be the service's base URL or already point at the control prefix."""
    try:
        return guard_mode.control_url(url, prefix, endpoint)
    except guard_mode.GuardModeError as exc:
        fail(str(exc))


def explicit_token(
    ctx: typer.Context, token: str | None, bearer: str | None, basic: str | None
) -> str | None:
    """`token`, unless it came from its environment variable while --bearer or --basic was
    given: the flag on the command line then sets the Authorization header."""
    source = ctx.get_parameter_source("token")
    from_env = source is not None and source.name == "ENVIRONMENT"
    return None if from_env and (bearer is not None or basic is not None) else token


def guard_transport(
    token: str | None,
    header: list[str] | None,
    bearer: str | None,
    basic: str | None,
    resolve: list[str] | None,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    insecure: bool,
) -> topt.Transport:
    """The shared flags plus ``--token`` (or ``env:NAME``) as ``Authorization: Bearer``, the
    token counted among the run's secrets; exit 2 with one sentence when something is wrong."""
    secret = ""
    if token:
        try:
            secret, _ = env_value(token, "--token")
        except ValueError as exc:
            fail(str(exc))
        if not secret or any(c.isspace() for c in secret):
            fail("--token needs a token without spaces or line breaks.")
        if bearer is not None or basic is not None:
            fail(
                "give the guard's token with --token or --bearer/--basic, not both: "
                "each sets the Authorization header."
            )
    transport = topt.build(header, bearer, basic, resolve, cacert, cert, key, insecure)
    if not secret:
        return transport
    headers = {k: v for k, v in transport.auth.headers.items() if k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {secret}"
    return topt.Transport(transport.spec, Auth(headers, (*transport.auth.secrets, secret)))


def _has_token(transport: topt.Transport) -> bool:
    return any(name.lower() == "authorization" for name in transport.auth.headers)


def redactor(transport: topt.Transport) -> Redactor:
    """Removes the run's secrets (the token, --bearer/--basic, secret -H values) from output."""
    return Redactor(transport.auth.secrets)


def _failed(exc: guard_mode.GuardModeError, transport: topt.Transport) -> NoReturn:
    """One sentence (secrets redacted), exit 3 when the guard never answered, else 2."""
    message = redactor(transport).text(str(exc))
    fail(message, EXIT_UNREACHABLE if exc.unreachable else EXIT_USAGE)


def reach(transport: topt.Transport, url: str, prefix: str, tool: str) -> Target:
    """The control target of the guard at `url` (an --insecure warning on stderr), after the
    shared preflight on its health endpoint: a name or certificate problem exits 3."""
    target = transport.target(control_url(url, prefix, "health"), tool)
    transport.check(guard_mode.endpoint(target, prefix, "health"))
    return target


@app.command()
def status(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Base URL of the service, e.g. http://127.0.0.1:8000"),
    prefix: str = typer.Option("/_crisis", help="The guard's control prefix."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="CRISISCTL_GUARD_READ_TOKEN",
        help="The guard's read (or write) token, needed from outside its trusted networks "
        "(or env:NAME).",
    ),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Show the guard's mode, limits, in-flight requests, shed counts and latency."""
    token = explicit_token(ctx, token, bearer, basic)
    transport = guard_transport(token, header, bearer, basic, resolve, cacert, cert, key, insecure)
    target = reach(transport, url, prefix, "crisisctl guard status")
    try:
        data = asyncio.run(guard_mode.read_status(target, prefix=prefix, timeout_s=timeout))
    except guard_mode.GuardModeError as exc:
        _failed(exc, transport)
    data = redactor(transport).tree(data)
    if json_out:
        print_json(data)
        return
    render_status(data)


def render_status(data: dict[str, Any]) -> None:
    """A compact human view of a status document."""
    mode = data.get("mode", {})
    conc = data.get("concurrency", {})
    lat = data.get("latency_ms", {})
    color = {"normal": "green", "emergency": "red", "recovering": "yellow"}.get(
        mode.get("mode"), "white"
    )
    console.print(
        f"mode [bold {color}]{mode.get('mode')}[/] since {mode.get('since')}  "
        f"(concurrency x{mode.get('concurrency_factor')}, rate x{mode.get('rate_factor')})"
    )
    console.print(
        f"requests {data.get('requests', {}).get('total')}  in flight {data.get('in_flight')}  "
        f"shed {data.get('shed_total')} {data.get('shed') or ''}"
    )
    if conc.get("mode") != "off":
        console.print(
            f"concurrency {describe_limits(concurrency_limits(conc))} "
            f"(queued {conc.get('queued')}/{conc.get('queue_size')}, "
            f"no-load {conc.get('rtt_noload_ms')} ms, recent {conc.get('rtt_recent_ms')} ms)"
        )
    console.print(
        f"latency (last minute) p50 {lat.get('p50')} ms  p95 {lat.get('p95')} ms  "
        f"p99 {lat.get('p99')} ms  max {lat.get('max')} ms  n={lat.get('count')}"
    )
    table = Table("route", "requests", "2xx", "4xx", "5xx", "rejected", "p99 ms", "breaker")
    breakers = data.get("breakers", {})
    for route in data.get("routes", []):
        classes = route.get("status_classes", {})
        table.add_row(
            route["route"], str(route["requests"]), str(classes.get("2xx", 0)),
            str(classes.get("4xx", 0)), str(classes.get("5xx", 0)),
            ", ".join(f"{k}={v}" for k, v in route.get("rejected", {}).items()) or "-",
            str(route.get("latency_ms", {}).get("p99")),
            breakers.get(route["route"], {}).get("state", "-"),
        )  # fmt: skip
    console.print(table)
    for change in mode.get("history", [])[-5:]:
        console.print(
            f"  {change['at']} {change['previous']} -> {change['mode']} by {change['actor']} "
            f"via {change['source']}{': ' + change['reason'] if change.get('reason') else ''}"
        )


@app.command()
def mode(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Base URL of the service, e.g. http://127.0.0.1:8000"),
    new_mode: str = typer.Argument(..., metavar="MODE", help="normal, emergency or recovering"),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="CRISISCTL_GUARD_TOKEN",
        help="The guard's bearer token (or env:NAME).",
    ),
    reason: str = typer.Option("", help="Why (recorded in the mode history)."),
    actor: str = typer.Option(None, help="Who (default: your user name)."),
    prefix: str = typer.Option("/_crisis", help="The guard's control prefix."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
    json_out: bool = typer.Option(False, "--json", help="Print the new mode state as JSON."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Switch the guard to normal, emergency or recovering at run time."""
    who = actor or os.environ.get("USER") or "crisisctl"
    token = explicit_token(ctx, token, bearer, basic)
    transport = guard_transport(token, header, bearer, basic, resolve, cacert, cert, key, insecure)
    try:
        guard_mode.check_switch(new_mode, "given" if _has_token(transport) else "")
    except guard_mode.GuardModeError as exc:
        _failed(exc, transport)
    target = reach(transport, url, prefix, "crisisctl guard mode")
    try:
        data = asyncio.run(
            guard_mode.post_mode(
                target, new_mode, prefix=prefix, reason=reason, actor=who, timeout_s=timeout
            )
        )
    except guard_mode.GuardModeError as exc:
        _failed(exc, transport)
    data = redactor(transport).tree(data)
    if json_out:
        print_json(data)
        return
    console.print(f"guard mode is now [bold]{data.get('mode')}[/] (since {data.get('since')})")
    console.print(describe_reach(data))


@app.command("cache-invalidate")
def cache_invalidate(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Base URL of the service, e.g. http://127.0.0.1:8000"),
    key_prefix: str = typer.Argument(
        ..., metavar="PREFIX", help="Drop cached responses whose path starts with it."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="CRISISCTL_GUARD_TOKEN",
        help="The guard's bearer token (or env:NAME).",
    ),
    prefix: str = typer.Option("/_crisis", help="The guard's control prefix."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
    json_out: bool = typer.Option(False, "--json", help="Print the guard's answer as JSON."),
    header: topt.HeaderOpt = None,
    bearer: topt.BearerOpt = None,
    basic: topt.BasicOpt = None,
    resolve: topt.ResolveOpt = None,
    cacert: topt.CacertOpt = None,
    cert: topt.CertOpt = None,
    key: topt.KeyOpt = None,
    insecure: topt.InsecureOpt = False,
) -> None:
    """Drop the guard's cached responses whose key (the path) starts with PREFIX."""
    token = explicit_token(ctx, token, bearer, basic)
    transport = guard_transport(token, header, bearer, basic, resolve, cacert, cert, key, insecure)
    if not _has_token(transport):
        fail("no token given: pass --token or set CRISISCTL_GUARD_TOKEN to the guard's token")
    if not key_prefix.startswith("/"):
        fail(f"the prefix {key_prefix!r} must be a path starting with '/', e.g. /api/items")
    target = reach(transport, url, prefix, "crisisctl guard cache-invalidate")
    try:
        data = asyncio.run(
            guard_mode.post_invalidate(target, key_prefix, prefix=prefix, timeout_s=timeout)
        )
    except guard_mode.GuardModeError as exc:
        _failed(exc, transport)
    data = redactor(transport).tree(data)
    if json_out:
        print_json(data)
        return
    console.print(f"dropped {data.get('dropped')} cached responses under {data.get('prefix')}")


def describe_reach(data: dict[str, Any]) -> str:
    """One line saying how far a switch reached: this process, or K of N fleet instances."""
    switch = data.get("switch")
    if not isinstance(switch, dict):  # a guard from before fleet-wide modes
        return "[yellow]scope unknown: the guard did not say which instances switched[/]"
    pid = switch.get("pid")
    if switch.get("scope") != "fleet":
        return (
            f"[yellow]this switch applies only to the process that answered (pid {pid})[/]: "
            "other workers or instances keep their mode; use Redis storage "
            "(storage='redis://…') to switch the whole fleet"
        )
    if not switch.get("stored"):
        return (
            f"[red]the fleet was not switched: Redis did not answer ({switch.get('error')})[/]; "
            f"only the answering process (pid {pid}) switched, and the fleet follows once "
            "Redis answers again, unless it is switched meanwhile"
        )
    confirmed, instances = switch.get("confirmed"), switch.get("instances")
    color = "green" if confirmed == instances else "yellow"
    line = (
        f"[{color}]fleet switch #{switch.get('switch_id')} confirmed by {confirmed} of "
        f"{instances} instances[/] within {switch.get('waited_ms')} ms"
    )
    if confirmed != instances:
        line += "; the others pick it up on their next re-read (about 1 s) if they are alive"
    return line
