"""Read-only views: the fleet, one service's series, the firing alerts, the event poll.

``GET /api/events/poll?last_event_id=ID`` is the polling fallback of the SSE stream: the same
replay (or a ``reset`` entry carrying the current id), never held open. Without an id it
answers no events and the current id, the point to poll from.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from crisisctl.server.deps import ERRORS, ApiError, Runtime, Viewer
from crisisctl.server.fleet import service_series
from crisisctl.server.schemas import Alert, Error, Fleet, PolledEvent, PollResult, SeriesResult
from crisisctl.watch.engine import alert_to_dict
from crisisctl.watch.intake_rows import firing_rows

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["fleet"])


@router.get("/fleet", response_model=Fleet, responses=ERRORS)
async def fleet(who: Viewer, runtime: Runtime) -> dict[str, Any]:
    """Every watched service's figures now (as of the last watch cycle)."""
    return runtime.fleet


@router.get(
    "/services/{name}/series",
    response_model=SeriesResult,
    responses={**ERRORS, 404: {"model": Error}},
)
async def series(
    name: str,
    who: Viewer,
    runtime: Runtime,
    window: Annotated[float, Query(ge=60, le=6 * 3600)] = 3600,
) -> dict[str, Any]:
    """Aligned time series of one service over the last `window` seconds (≤ 360 points)."""
    watch = runtime.watch
    if watch is None or name not in watch.config.services:
        raise ApiError(404, f"no watched service is named {name!r}: GET /api/fleet lists them.")
    return service_series(watch, name, time.time(), window)


@router.get("/alerts", response_model=list[Alert], responses=ERRORS)
async def alerts(who: Viewer, runtime: Runtime) -> list[dict[str, Any]]:
    """The alerts firing now: the watch's own rules', then Alertmanager's (the intake)."""
    if runtime.watch is None:
        return []
    own = [{**alert_to_dict(a), "source": "watch"} for a in runtime.watch.engine.firing()]
    if runtime.intake is None or runtime.db is None:
        return own
    return own + await asyncio.to_thread(firing_rows, runtime.db)


@router.get("/events/poll", response_model=PollResult, responses=ERRORS)
async def poll(
    who: Viewer,
    runtime: Runtime,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> PollResult:
    """The events after `last_event_id` (the SSE stream's polling fallback)."""
    hub = runtime.hub
    reset, events = hub.since(last_event_id)
    if reset:
        events = [hub.reset_event()]
    rows = [PolledEvent(**e.as_dict()) for e in events]
    return PollResult(events=rows, last_event_id=events[-1].id if events else hub.last_id)
