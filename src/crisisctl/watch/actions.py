"""The runbook's actions: switch the service's guards, call a webhook, run a command.

Each action is bounded in time and returns an `ActionOutcome` (ok or not, one line of text,
its duration, figures) that the responder writes on the incident's timeline. Nothing here
raises for a failed action: a failure is an outcome. Guard tokens never reach an outcome's text
or details; a command gets no shell, is killed at its timeout, and only the tail of its output
is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from crisisctl.probe.guard_mode import GuardModeError, switch_mode
from crisisctl.watch.model import GuardEndpoint
from crisisctl.watch.respond_config import (
    Action,
    CommandAction,
    GuardModeAction,
    WebhookAction,
)

#: characters of a command's output kept on the timeline (its end: where errors are)
OUTPUT_TAIL: Final = 2000
GUARD_TIMEOUT_S: Final = 5.0
ACTOR: Final = "crisisctl watch"


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action may use: the incident, the alert that triggered it, the service's guards."""

    incident_id: int
    service: str
    rule: str
    severity: str
    level: int
    #: the alert as JSON (what a webhook receives)
    alert: Mapping[str, Any]
    guards: Sequence[GuardEndpoint] = ()
    #: how the timeline names the action (default: "level N")
    label: str = ""


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """One action's result, as the timeline records it."""

    kind: str
    ok: bool
    text: str
    duration_ms: float
    details: dict[str, Any] = field(default_factory=dict)


def _fill(template: str, ctx: ActionContext) -> str:
    values = {"rule": ctx.rule, "service": ctx.service, "severity": ctx.severity}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template  # an unknown placeholder: keep the text as written


async def _guard_mode(
    action: GuardModeAction, ctx: ActionContext
) -> tuple[bool, str, dict[str, Any]]:
    if not ctx.guards:
        return False, f"service {ctx.service} has no guarded instance to switch", {}
    reason = _fill(action.reason, ctx)

    async def one(guard: GuardEndpoint) -> dict[str, Any]:
        try:
            data = await switch_mode(
                guard.url, action.guard_mode, token=guard.token or "", reason=reason,
                actor=ACTOR, prefix=guard.prefix, timeout_s=GUARD_TIMEOUT_S, resolve=guard.resolve,
                transport=guard.transport, headers=dict(guard.headers),
            )  # fmt: skip
        except GuardModeError as exc:
            return {"url": guard.url, "ok": False, "error": str(exc)}
        return {
            "url": guard.url,
            "ok": data.get("mode") == action.guard_mode,
            "mode": data.get("mode"),
        }

    results = await asyncio.gather(*(one(g) for g in ctx.guards))
    switched = sum(1 for r in results if r["ok"])
    text = f"guard mode → {action.guard_mode} on {switched} of {len(results)} instance(s)"
    failed = [f"{r['url']}: {r.get('error') or r.get('mode')}" for r in results if not r["ok"]]
    if failed:
        text += "; failed: " + "; ".join(failed)
    return switched == len(results), text, {"mode": action.guard_mode, "instances": results}


async def _webhook(action: WebhookAction, ctx: ActionContext) -> tuple[bool, str, dict[str, Any]]:
    payload = {"incident_id": ctx.incident_id, "level": ctx.level, "alert": dict(ctx.alert)}
    shown = action.webhook.split("?", 1)[0]  # a query string may carry a key
    try:
        async with (
            httpx.AsyncClient(timeout=action.timeout, trust_env=False) as client,
            client.stream("POST", action.webhook, json=payload) as response,
        ):
            status = response.status_code  # the answer's body is never read: bounded
    except httpx.TimeoutException:
        return False, f"webhook {shown} did not answer within {action.timeout:g} s", {}
    except httpx.HTTPError as exc:
        return False, f"webhook {shown} failed ({exc.__class__.__name__}: {exc})", {}
    ok = 200 <= status < 300
    return ok, f"webhook {shown} answered HTTP {status}", {"status": status}


async def _command(action: CommandAction, ctx: ActionContext) -> tuple[bool, str, dict[str, Any]]:
    env = {
        **os.environ,
        "CRISISCTL_INCIDENT_ID": str(ctx.incident_id),
        "CRISISCTL_SERVICE": ctx.service,
        "CRISISCTL_SEVERITY": ctx.severity,
        "CRISISCTL_RULE": ctx.rule,
        "CRISISCTL_ESCALATION_LEVEL": str(ctx.level),
    }
    argv = [_fill(arg, ctx) for arg in action.command]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        return False, f"command {argv[0]} could not start ({exc.strerror or exc})", {}
    timed_out = False
    try:
        output, _ = await asyncio.wait_for(process.communicate(), action.timeout)
    except TimeoutError:
        timed_out = True
        process.kill()
        output, _ = await process.communicate()
    tail = output.decode(errors="replace")[-OUTPUT_TAIL:]
    details = {"argv0": argv[0], "exit_code": process.returncode, "output_tail": tail}
    if timed_out:
        return False, f"command {argv[0]} killed after {action.timeout:g} s", details
    ok = process.returncode == 0
    return ok, f"command {argv[0]} exited with code {process.returncode}", details


async def run_action(action: Action, ctx: ActionContext) -> ActionOutcome:
    """Run one action; its outcome (never an exception for a failed action)."""
    started = time.perf_counter()
    if isinstance(action, GuardModeAction):
        kind = "guard_mode"
        ok, text, details = await _guard_mode(action, ctx)
    elif isinstance(action, WebhookAction):
        kind = "webhook"
        ok, text, details = await _webhook(action, ctx)
    else:
        kind = "command"
        ok, text, details = await _command(action, ctx)
    duration_ms = (time.perf_counter() - started) * 1000.0
    details = {**details, "ok": ok, "duration_ms": round(duration_ms, 1)}
    label = ctx.label or f"level {ctx.level}"
    text = f"{label} action: {text} ({'ok' if ok else 'FAILED'}, {duration_ms:.0f} ms)"
    json.dumps(details)  # outcomes go into a JSON column: fail here, not in the store
    return ActionOutcome(kind, ok, text, duration_ms, details)


__all__ = ["ActionContext", "ActionOutcome", "run_action"]
