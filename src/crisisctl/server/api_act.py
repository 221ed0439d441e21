"""Acting on a service: switch the guard mode of every instance, run a triage (operators).

Mode: each guarded instance of the service (the watch's directory: the file's guards, or those
DNS found) is switched through its control API (`probe.guard_mode.switch_mode`) with the
guard's token, which stays on the server; the actor the guard records is the signed-in name.
Triage: a bounded `probe.triage` run of the service's probe URL, summarised as
``crisisctl incident attach`` summarises a triage report.

Each outcome is written to the timeline of the service's newest open incident (kind
``guard_mode`` or ``triage``, author = the signed-in name). With no open incident there is no
timeline to write: the outcome is still published as a ``timeline`` event with
``incident_id: null``, so every open console sees who did what.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter

from crisisctl.incidents import store
from crisisctl.incidents.lifecycle import EVENT_GUARD_MODE, EVENT_NOTE
from crisisctl.incidents.reports import summarise_report
from crisisctl.probe.guard_mode import GuardModeError, switch_mode
from crisisctl.probe.plan import plan_triage
from crisisctl.probe.triage import run_triage
from crisisctl.server.deps import ERRORS, ApiError, Operator, Runtime
from crisisctl.server.fleet import redact_url
from crisisctl.server.schemas import Error, InstanceSwitch, ModeChange, ModeResult, TriageResult
from crisisctl.watch.model import GuardEndpoint

__all__ = ["router"]

router = APIRouter(prefix="/api/services", tags=["act"])
SOURCE: Final = "serve"
GUARD_TIMEOUT_S: Final = 5.0
TRIAGE_BUDGET_S: Final = 10.0
TRIAGE_SAMPLES: Final = 10
_RESPONSES = {**ERRORS, 404: {"model": Error}, 502: {"model": Error}}


def _service(runtime: Any, name: str) -> Any:
    watch = runtime.watch
    if watch is None or name not in watch.config.services:
        raise ApiError(404, f"no watched service is named {name!r}: GET /api/fleet lists them.")
    return watch


async def _record(
    runtime: Any, service: str, kind: str, text: str, details: dict[str, Any], author: str
) -> int | None:
    """Write on the newest open incident of `service` (its id), or publish only (None)."""
    db = runtime.db
    opened = await asyncio.to_thread(
        store.list_incidents, db, status="open", service=service, limit=1
    )
    if opened:
        incident_id = opened[0].id
        await asyncio.to_thread(
            store.add_event, db, incident_id, kind=kind, text=text, details=details,
            source=SOURCE, author=author,
        )  # fmt: skip
        await runtime.sync_incidents()
        return incident_id
    entry = {"kind": kind, "text": text, "details": details, "source": SOURCE, "author": author}
    runtime.hub.publish("timeline", {"incident_id": None, "service": service, "entry": entry})
    return None


async def _switch(guard: GuardEndpoint, mode: str, reason: str, actor: str) -> dict[str, Any]:
    shown = redact_url(guard.url)
    try:
        data = await switch_mode(
            guard.url, mode, token=guard.token or "", reason=reason, actor=actor,
            prefix=guard.prefix, timeout_s=GUARD_TIMEOUT_S, resolve=guard.resolve,
            transport=guard.transport, headers=dict(guard.headers),
        )  # fmt: skip
    except GuardModeError as exc:
        return {"url_redacted": shown, "ok": False, "mode": None, "error": str(exc)}
    now = data.get("mode")
    return {
        "url_redacted": shown,
        "ok": now == mode,
        "mode": now if isinstance(now, str) else None,
        "error": None if now == mode else f"the guard reports mode {now!r}",
    }


@router.post("/{name}/mode", response_model=ModeResult, responses=_RESPONSES)
async def switch(name: str, body: ModeChange, who: Operator, runtime: Runtime) -> ModeResult:
    """Switch every instance of the service to `mode`; written to the timeline with the user."""
    watch = _service(runtime, name)
    guards = list(watch.directory.guards(name))
    if not guards:
        raise ApiError(404, f"service {name!r} has no guarded instance to switch.")
    actor = f"{who.name} (crisisctl serve)"
    reason = body.reason.strip() or f"switched from the console by {who.name}"
    results = await asyncio.gather(*(_switch(g, body.mode, reason, actor) for g in guards))
    switched = sum(1 for r in results if r["ok"])
    text = f"guard mode → {body.mode} on {switched} of {len(results)} instance(s): {reason}"
    failed = [f"{r['url_redacted']}: {r['error']}" for r in results if not r["ok"]]
    if failed:
        text += "; failed: " + "; ".join(failed)
    details = {"mode": body.mode, "reason": reason, "instances": results}
    incident_id = await _record(runtime, name, EVENT_GUARD_MODE, text, details, who.name)
    return ModeResult(
        service=name, mode=body.mode, ok=switched == len(results), text=text,
        instances=[InstanceSwitch(**r) for r in results], incident_id=incident_id,
    )  # fmt: skip


@router.post("/{name}/triage", response_model=TriageResult, responses=_RESPONSES)
async def triage(name: str, who: Operator, runtime: Runtime) -> TriageResult:
    """Run a bounded triage of the service; the verdict is written to the timeline."""
    watch = _service(runtime, name)
    url = watch.directory.probe_url(name)
    if url is None:
        raise ApiError(404, f"service {name!r} has no probe or guard URL to triage.")
    try:
        plan = plan_triage(url, samples=TRIAGE_SAMPLES, concurrency=2, budget_s=TRIAGE_BUDGET_S)
        report = await asyncio.wait_for(run_triage(plan), TRIAGE_BUDGET_S + 2.0)
    except (ValueError, TimeoutError) as exc:
        text = f"triage of {redact_url(url)} by {who.name} could not run ({exc or 'timeout'})"
        await _record(runtime, name, EVENT_NOTE, text, {"error": str(exc)[:300]}, who.name)
        raise ApiError(
            502, f"the triage of {name} could not run: {exc or 'it timed out'}."
        ) from None
    kind, summary, details = summarise_report(report)
    text = f"triage by {who.name}: {summary}"
    incident_id = await _record(runtime, name, kind, text, details, who.name)
    return TriageResult(
        service=name, severity=details.get("severity"), reasons=list(details.get("reasons", [])),
        text=text, incident_id=incident_id,
    )  # fmt: skip
