"""`crisisctl guard status URL` and `crisisctl guard mode URL MODE`: talk to a running guard."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer
from rich.table import Table

from crisisctl.cli.output import EXIT_UNREACHABLE, console, fail, print_json
from crisisctl.probe.guard import concurrency_limits, describe_limits

app = typer.Typer(help="Inspect and steer the guard of a running service.", no_args_is_help=True)

MODES = ("normal", "emergency", "recovering")


def control_url(url: str, prefix: str, endpoint: str) -> str:
    """`URL` may be the service's base URL or already point at the control prefix."""
    if not url.startswith(("http://", "https://")):
        fail(
            f"{url!r} is not an http(s) URL: give the service's base URL, e.g. http://127.0.0.1:8000"
        )
    base = url.rstrip("/")
    for name in ("status", "metrics", "health", "mode"):
        if base.endswith(f"{prefix}/{name}"):
            base = base[: -len(name) - 1]
            break
    if not base.endswith(prefix):
        base += prefix
    return f"{base}/{endpoint}"


def _request(method: str, url: str, timeout: float, **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=timeout, **kwargs)
    except httpx.TimeoutException:
        fail(
            f"{url} did not answer within {timeout:g} s; is the service overloaded or down?",
            EXIT_UNREACHABLE,
        )
    except httpx.HTTPError as exc:
        fail(
            f"could not reach {url} ({exc.__class__.__name__}: {exc}); is the service running?",
            EXIT_UNREACHABLE,
        )


def _json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        fail(
            f"{url} answered HTTP {response.status_code} without JSON; "
            "is the guard installed at this prefix?"
        )
    if not isinstance(data, dict):
        fail(f"{url} answered unexpected JSON; is the guard installed at this prefix?")
    return data


@app.command()
def status(
    url: str = typer.Argument(..., help="Base URL of the service, e.g. http://127.0.0.1:8000"),
    prefix: str = typer.Option("/_crisis", help="The guard's control prefix."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
    token: str = typer.Option(
        None,
        "--token",
        envvar="CRISISCTL_GUARD_READ_TOKEN",
        help="The guard's read (or write) token, needed from outside its trusted networks.",
    ),
) -> None:
    """Show the guard's mode, limits, in-flight requests, shed counts and latency."""
    target = control_url(url, prefix, "status")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = _request("GET", target, timeout, headers=headers)
    if response.status_code in (401, 403, 429):
        detail = _json(response, target).get("error", "")
        fail(f"the guard refused to show its status (HTTP {response.status_code}): {detail}")
    if response.status_code != 200:
        fail(f"{target} answered HTTP {response.status_code}; is the guard installed at {prefix}?")
    data = _json(response, target)
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
    url: str = typer.Argument(..., help="Base URL of the service, e.g. http://127.0.0.1:8000"),
    new_mode: str = typer.Argument(..., metavar="MODE", help="normal, emergency or recovering"),
    token: str = typer.Option(
        None, "--token", envvar="CRISISCTL_GUARD_TOKEN", help="The guard's bearer token."
    ),
    reason: str = typer.Option("", help="Why (recorded in the mode history)."),
    actor: str = typer.Option(None, help="Who (default: your user name)."),
    prefix: str = typer.Option("/_crisis", help="The guard's control prefix."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for the answer."),
    json_out: bool = typer.Option(False, "--json", help="Print the new mode state as JSON."),
) -> None:
    """Switch the guard to normal, emergency or recovering at run time."""
    if new_mode not in MODES:
        fail(f"unknown mode {new_mode!r}: use one of {', '.join(MODES)}")
    if not token:
        fail("no token given: pass --token or set CRISISCTL_GUARD_TOKEN to the guard's token")
    target = control_url(url, prefix, "mode")
    who = actor or os.environ.get("USER") or "crisisctl"
    response = _request(
        "POST", target, timeout,
        json={"mode": new_mode, "reason": reason, "actor": who},
        headers={"authorization": f"Bearer {token}"},
    )  # fmt: skip
    if response.status_code in (401, 403):
        detail = _json(response, target).get("error", "")
        fail(f"the guard refused the switch (HTTP {response.status_code}): {detail}")
    if response.status_code != 200:
        fail(f"{target} answered HTTP {response.status_code}: {response.text[:200]}")
    data = _json(response, target)
    if json_out:
        print_json(data)
        return
    console.print(f"guard mode is now [bold]{data.get('mode')}[/] (since {data.get('since')})")
    console.print(describe_reach(data))


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
